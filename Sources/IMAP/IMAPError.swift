/// What went wrong in an IMAP session. Equal by code; `message` is a sentence for the operator
/// (server text in it is cut to 200 characters, control characters replaced).
public struct IMAPError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// The server refused the user name and password (a NO to LOGIN or AUTHENTICATE): a
        /// configuration problem, not a temporary one.
        public static let loginRefused = Code(name: "loginRefused")
        /// No TLS to be had: STARTTLS not offered, PREAUTH before TLS, credentials that would go
        /// in plaintext. Nothing secret was sent.
        public static let noTLS = Code(name: "noTLS")
        /// Bytes came after the server's OK to STARTTLS, before TLS (a STARTTLS injection).
        public static let plaintextAfterSTARTTLS = Code(name: "plaintextAfterSTARTTLS")
        /// The TLS handshake failed (an untrusted certificate, a wrong name, no common version).
        public static let tls = Code(name: "tls")
        /// The connection could not be made.
        public static let unreachable = Code(name: "unreachable")
        /// No answer in time.
        public static let timeout = Code(name: "timeout")
        /// The server closed the connection (a BYE's text is in the message).
        public static let closed = Code(name: "closed")
        /// The server answered a command with NO or BAD.
        public static let rejected = Code(name: "rejected")
        /// The server broke the protocol (a malformed response, a line too long, a wrong tag).
        public static let malformed = Code(name: "malformed")
        /// A message is larger than the client's limit; it was skipped, the session goes on.
        public static let messageTooLarge = Code(name: "messageTooLarge")
        /// An argument held CR, LF or NUL (or a flag is not an atom): refused before writing.
        public static let unsafeArgument = Code(name: "unsafeArgument")
        /// The server lacks what the call needs (IDLE).
        public static let unsupported = Code(name: "unsupported")
    }

    public var code: Code
    public var message: String
    /// The response code of the server's answer, when there was one (`[AUTHENTICATIONFAILED]`).
    public var responseCode: IMAPResponseCode?
    /// For `messageTooLarge`: the size the server announced.
    public var size: Int?

    public init(_ code: Code, _ message: String, responseCode: IMAPResponseCode? = nil, size: Int? = nil) {
        self.code = code
        self.message = message
        self.responseCode = responseCode
        self.size = size
    }

    public var description: String { message }

    public static func == (a: IMAPError, b: IMAPError) -> Bool { a.code == b.code }

    /// Server text made safe to print: control characters become `?`, at most 200 characters.
    static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(200) {
            let v = scalar.value
            out.unicodeScalars.append(v < 0x20 || (0x7F...0x9F).contains(v) ? "?" : scalar)
        }
        return text.unicodeScalars.count > 200 ? out + "…" : out
    }
}
