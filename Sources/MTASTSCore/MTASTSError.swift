/// The project's error, in the spirit of swift-certificates' `CertificateError`: a code a program
/// can match, a message a postmaster can act on, and whether trying again later may succeed. Each
/// library error converts to it (`MTASTSErrorConvertible`); the command line decides the exit code
/// from it in one place (`Exit.code(for:)` in MTASTSCLI).
public struct MTASTSError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, CaseIterable {
        /// Bad arguments or options.
        case usage
        /// A configuration file or setting is wrong.
        case configuration
        /// Input that is not what it claims: a policy, record, report, datagram, message.
        case invalidInput = "invalid-input"
        /// What was asked for does not exist.
        case notFound = "not-found"
        /// DNS did not answer usefully.
        case dns
        /// A connection, TLS handshake or HTTP exchange failed.
        case network
        /// The database failed.
        case storage
        /// Starting failed: sockets, files, users, permissions.
        case setup
    }

    public var code: Code
    public var message: String
    /// Trying again later may succeed (exit 3, or 75 for a mail pipe).
    public var temporary: Bool

    public init(_ code: Code, _ message: String, temporary: Bool = false) {
        self.code = code
        self.message = message
        self.temporary = temporary
    }

    public var description: String { message }
}

/// An error that says which `MTASTSError` it is.
public protocol MTASTSErrorConvertible: Error {
    var mtastsError: MTASTSError { get }
}

extension MTASTSError: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { self }
}

extension DomainName.Invalid: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.invalidInput, description) }
}

extension JSONParseError: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.invalidInput, description) }
}

extension NotAReport: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.invalidInput, description) }
}

extension Gzip.Failure: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.invalidInput, description) }
}

extension TLSRPTDatagram.Malformed: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.invalidInput, description) }
}
