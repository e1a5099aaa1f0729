import MTASTSCore
import PolicyResolver

/// What `mtasts query` shows: the resolution of one destination and the exact socketmap reply.
public struct PolicyAnswer: Sendable {
    public var domain: String
    public var resolution: Resolution?
    public var reply: String
    /// Why there is no resolution (an address literal, a pattern).
    public var note: String?

    public init(domain: String, resolution: Resolution?, reply: String, note: String?) {
        self.domain = domain
        self.resolution = resolution
        self.reply = reply
        self.note = note
    }

    public var json: JSONValue {
        let status = resolution?.status.rawValue ?? "no-policy"
        let entry = resolution?.entry
        func time(_ t: Double?) -> JSONValue { t.map { .string(RFC3339.format(Int64($0))) } ?? .null }
        var members: [JSONMember] = [
            JSONMember("domain", .string(domain)),
            JSONMember("status", .string(status)),
            JSONMember("source", resolution.map { .string($0.source.rawValue) } ?? .null),
            JSONMember("reason", .string(note ?? resolution?.reason ?? "")),
        ]
        if let policy = resolution?.policy, let entry {
            members.append(JSONMember("policy", .object([
                JSONMember("id", entry.stsID.map(JSONValue.string) ?? .null),
                JSONMember("mode", .string(policy.mode.rawValue)),
                JSONMember("max_age", .int(Int64(policy.maxAge))),
                JSONMember("mx", .array(policy.mx.map { .string($0.text) })),
                JSONMember("fetched", time(entry.fetchedAt)),
                JSONMember("expires", time(entry.expiresAt)),
                JSONMember("dane", .string(["none", "usable", "temporary"][entry.dane.rawValue])),
                JSONMember("mx_hosts", entry.mxHosts.map { .array($0.map(JSONValue.string)) } ?? .null),
            ])))
        } else {
            members.append(JSONMember("policy", .null))
        }
        members.append(JSONMember("failure", resolution?.failure.map { .string($0.rawValue) } ?? .null))
        members.append(JSONMember("reply", .string(reply)))
        return .object(members)
    }

    public func text(style: TextStyle) -> String {
        let entry = resolution?.entry
        var lines: [String] = []
        switch resolution?.status {
        case .policy?:
            let policy = resolution!.policy!
            lines.append("\(domain): \(style.green("policy")) (mode \(policy.mode.rawValue)), \(resolution!.source == .cache ? "from the cache" : "fetched now")")
            lines.append("  id:       \(entry?.stsID ?? "?")")
            lines.append("  mx:       \(policy.mx.map(\.text).joined(separator: ", "))")
            lines.append("  max_age:  \(policy.maxAge)")
            if let entry {
                lines.append("  fetched:  \(RFC3339.format(Int64(entry.fetchedAt)))")
                lines.append("  expires:  \(RFC3339.format(Int64(entry.expiresAt)))")
                switch entry.dane {
                case .usable: lines.append("  DANE:     every MX host is authenticated by usable DANE records; in DNSSEC zones DANE applies (RFC 8461 §2)")
                case .temporary: lines.append("  DANE:     unknown (a look-up failed); DNSSEC zones answer TEMP")
                case .none: break
                }
                if let hosts = entry.mxHosts { lines.append("  MX hosts: \(hosts.joined(separator: ", "))") }
                if let failure = entry.failure, let reason = entry.reason {
                    lines.append("  last refresh failed: \(failure.rawValue): \(reason)")
                }
            }
        case .temporary?:
            lines.append("\(domain): \(style.yellow("temporary failure")): \(resolution!.reason)")
        default:
            lines.append("\(domain): \(style.bold("no policy")): \(note ?? resolution?.reason ?? "")")
            if let failure = resolution?.failure { lines.append("  failure:  \(failure.rawValue)") }
        }
        lines.append("  reply:    \(reply)")
        return lines.joined(separator: "\n")
    }
}
