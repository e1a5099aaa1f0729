// swift-tools-version:6.1
import PackageDescription

/// The directory of this manifest (the link order file is named from it: the linker runs elsewhere).
let packageRoot = String(#filePath.dropLast("/Package.swift".count))
/// `MTASTS_LINK_MAP=path`: the release link also writes its map there (for scripts/link-order.sh).
let linkMap = Context.environment["MTASTS_LINK_MAP"].map { ["-Xlinker", "-Map=\($0)"] } ?? []
/// `MTASTS_STATIC_LIBS=dir` (scripts/build-release.sh): a directory of links to the static archives
/// of the C and C++ libraries the release binary would otherwise load as shared objects; searched
/// first, so `-lstdc++`, `-lsqlite3`, … take the archive there.
let staticLibs = Context.environment["MTASTS_STATIC_LIBS"].map { ["-L", $0] } ?? []

let package = Package(
    name: "swift-mta-sts",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mtasts", targets: ["mtasts"]),
        .library(name: "MTASTSCore", targets: ["MTASTSCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.10.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.3.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        // The Swift server stack: HTTP (Hummingbird 2), logs, metrics, service life cycle.
        // Hummingbird without its swift-configuration trait (we read our own YAML).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0", traits: []),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.2.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // bcrypt for the dashboard's password hashes (only its HummingbirdBcrypt module is built).
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
    ],
    targets: [
        // zlib (gzip for TLS reports) through a tiny system-library shim; no extra package.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // glibc's libresolv through a small C shim; DNS look-ups with the AD bit.
        .systemLibrary(name: "CResolv", path: "Sources/CResolv"),
        .target(name: "CDatagram"),
        .target(name: "MailDNS", dependencies: ["CResolv", "MTASTSCore", "ServerSupport"]),
        // Strict HTTPS policy fetch, SMTP STARTTLS probe, certificate checks (RFC 8461 §3.3, §4).
        .target(name: "MTASTSNet", dependencies: [
            "MTASTSCore", "ServerSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ]),
        // SQLite and PostgreSQL (libpq) through system-library shims; small blocking wrappers.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite"),
        // libpq opened on first use (dlopen), not linked: see Sources/CLibPQ/include/CLibPQ.h.
        .target(name: "CLibPQ"),
        .target(name: "Storage", dependencies: ["CSQLite", "CLibPQ", "MTASTSCore"]),
        // The sender's policy resolver: DNS + strict fetch + cache stores + refresh (RFC 8461 §3.3, §5).
        .target(name: "PolicyResolver", dependencies: [
            "MTASTSCore", "MTASTSNet", "MailDNS", "Storage", "ServerSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        // The Postfix socketmap protocol: netstring codec, request keys, replies.
        .target(name: "Socketmap", dependencies: [
            "MTASTSCore", "ServerSupport",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        // The domain owner's side of TLS-RPT: reports stored as rows, summaries, readiness.
        .target(name: "TLSRPTReceiver", dependencies: [
            "MTASTSCore", "Storage", "DKIM", "ServerSupport", "IMAP",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // DKIM (RFC 6376, RFC 8463): verify received report mail, sign the reports we send.
        .target(name: "DKIM", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ]),
        // The sender's side of TLS-RPT: libtlsrpt collector, daily reports, delivery.
        .target(name: "TLSRPTSender", dependencies: [
            "CDatagram", "MTASTSCore", "MTASTSConfig", "MTASTSNet", "Storage", "DKIM", "ServerSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // `mtasts check`: the end-to-end domain checker.
        .target(name: "MTASTSCheck", dependencies: ["MTASTSCore", "MTASTSNet", "MailDNS"]),
        // Values and parsers, no I/O.
        .target(name: "MTASTSCore", dependencies: ["CZlib"]),
        // Logs (swift-log, one line format for every role), metrics (swift-metrics exported by
        // swift-prometheus), the bounded pool for blocking calls, file and line readers.
        .target(name: "ServerSupport", dependencies: [
            "MTASTSCore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Atomics", package: "swift-atomics"),
        ]),
        // The three YAML configurations (daemon, serve, the sender's reporting): values only.
        .target(name: "MTASTSConfig", dependencies: [
            "MTASTSCore",
            .product(name: "Yams", package: "Yams"),
        ]),
        // `mtasts daemon`: the socketmap reply rules, the resolver and stores a configuration
        // describes, and the daemon's services (listeners, refresher, reload, collector, daily run).
        .target(name: "PolicyDaemon", dependencies: [
            "MTASTSCore", "MTASTSConfig", "MTASTSNet", "MailDNS", "PolicyResolver", "Socketmap", "TLSRPTSender", "DKIM", "ServerSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Atomics", package: "swift-atomics"),
        ]),
        // The domain owner's watch: periodic end-to-end checks kept in the database, and alerts
        // (webhook, mail) on what changed in the checks and in the received reports.
        .target(name: "Watch", dependencies: [
            "MTASTSCore", "MTASTSConfig", "MTASTSCheck", "MTASTSNet", "MailDNS", "Storage", "TLSRPTReceiver", "ServerSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // IMAP client (RFC 9051/3501 subset) for report mailboxes: response parser, NIO client, imap(s):// URLs.
        .target(name: "IMAP", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // `mtasts serve` on Hummingbird 2: policy host (Host/SNI), report endpoint, read-only API,
        // and the Prometheus endpoint every role uses.
        .target(name: "WebServer", dependencies: [
            "MTASTSCore", "MTASTSConfig", "TLSRPTReceiver", "ServerSupport", "Watch",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // Commands, text/JSON output, exit codes.
        .target(name: "MTASTSCLI", dependencies: [
            "MTASTSCore", "MTASTSCheck", "MTASTSNet", "MailDNS", "PolicyResolver", "Socketmap", "Storage", "TLSRPTReceiver", "TLSRPTSender", "DKIM",
            "MTASTSConfig", "WebServer", "ServerSupport", "PolicyDaemon", "Watch",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // Release link on Linux (the daemons' resident memory; BENCHMARKS.md, "Where the daemon's
        // memory is"): lld, relative relocations packed (DT_RELR, glibc 2.36+: 3 MB of .rela.dyn
        // no longer read at start), no symbol table exported to the dynamic linker (2 MB), and the
        // code the daemon runs at start and per look-up laid out together at the start of .text by
        // the linker script scripts/link-order.ld (input sections, made by scripts/link-order.sh;
        // MTASTS_LINK_MAP=path also writes the link map that script reads). The layout needs the
        // code in one section per function: release builds pass `-Xswiftc -function-sections`
        // (scripts/build-release.sh); without it, or with a stale script, the binary is only
        // larger in memory, never wrong.
        .executableTarget(name: "mtasts", dependencies: ["MTASTSCLI"], linkerSettings: [
            .unsafeFlags([
                "-use-ld=lld",
                "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                "-Xlinker", "--no-export-dynamic",
                "-Xlinker", "-T", "-Xlinker", "\(packageRoot)/scripts/link-order.ld",
            ] + linkMap + staticLibs, .when(platforms: [.linux], configuration: .release)),
        ]),
        // Golden vectors are read from the source tree (input beside expected output).
        .testTarget(name: "MTASTSCoreTests", dependencies: ["MTASTSCore"], exclude: ["Vectors"]),
        .testTarget(name: "MTASTSCLITests", dependencies: ["mtasts", "MTASTSCore", "TestSupport"]),
        // Real components for tests: dnsmasq, test CAs, local HTTPS and SMTP servers.
        .target(name: "TestSupport", dependencies: [
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ], path: "Tests/TestSupport"),
        .testTarget(name: "MailDNSTests", dependencies: ["MailDNS", "TestSupport"]),
        .testTarget(name: "SocketmapTests", dependencies: [
            "Socketmap", "MTASTSCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOTestUtils", package: "swift-nio"),
        ]),
        .testTarget(name: "PolicyResolverTests", dependencies: ["PolicyResolver", "MTASTSNet", "MailDNS", "MTASTSCore", "Storage", "TestSupport"]),
        .testTarget(name: "DaemonTests", dependencies: ["mtasts", "TestSupport"]),
        .testTarget(name: "ReceiverTests", dependencies: [
            "mtasts", "TestSupport",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        .testTarget(name: "SenderTests", dependencies: ["mtasts", "TestSupport", .product(name: "Hummingbird", package: "hummingbird")]),
        // The loopback world of the `mtasts check` benchmark (Benchmarks/check.sh).
        .executableTarget(name: "mtasts-bench-world", dependencies: ["TestSupport"], path: "Benchmarks/World"),
        // The Dovecot of the IMAP ingestion benchmark (Benchmarks/imap.sh).
        .executableTarget(name: "mtasts-bench-dovecot", dependencies: ["TestSupport"], path: "Benchmarks/Dovecot"),
        // The netstring load generator of the socketmap benchmark (Benchmarks/socketmap.sh).
        .executableTarget(name: "mtasts-bench-socketmap", path: "Benchmarks/SocketmapLoad", swiftSettings: [.swiftLanguageMode(.v5)]),
        // The socketmap benchmark's bound: a netstring server that answers every request with fixed
        // bytes (same NIO stack and framing as the daemon, no look-up).
        .executableTarget(name: "mtasts-bench-echo", dependencies: [
            "Socketmap",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], path: "Benchmarks/Echo"),
        // In-process: routes through Hummingbird's test client, no child process.
        .testTarget(name: "WebServerTests", dependencies: [
            "WebServer", "MTASTSConfig", "TLSRPTReceiver", "MTASTSCore", "ServerSupport", "TestSupport", "Watch", "MTASTSCheck", "MTASTSNet",
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "PolicyDaemonTests", dependencies: [
            "PolicyDaemon", "PolicyResolver", "MTASTSConfig", "MTASTSCore", "TLSRPTSender", "Socketmap", "MTASTSNet",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // In-process tests of each library (no child process; real files and SQLite, openssl for keys).
        .testTarget(name: "ServerSupportTests", dependencies: [
            "ServerSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "MTASTSConfigTests", dependencies: ["MTASTSConfig", "MTASTSCore"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "MTASTSCore", "TestSupport"]),
        .testTarget(name: "DKIMTests", dependencies: ["DKIM", .product(name: "_CryptoExtras", package: "swift-crypto")]),
        .testTarget(name: "MTASTSNetTests", dependencies: ["MTASTSNet", "MTASTSCore", "TestSupport", .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                   .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1")]),
        .testTarget(name: "TLSRPTReceiverTests", dependencies: ["TLSRPTReceiver", "MTASTSCore", "DKIM", "TestSupport"]),
        .testTarget(name: "WatchTests", dependencies: [
            "Watch", "TLSRPTReceiver", "MTASTSCheck", "MTASTSConfig", "MTASTSCore", "MTASTSNet",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        .testTarget(name: "TLSRPTSenderTests", dependencies: ["TLSRPTSender", "MTASTSCore", "MTASTSNet", "Storage", "TestSupport"]),
        .testTarget(name: "MTASTSCheckTests", dependencies: ["mtasts", "MTASTSNet", "TestSupport"]),
    ]
)
