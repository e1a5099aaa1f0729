// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-mta-sts",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mtasts", targets: ["mtasts"]),
        .library(name: "MTASTSCore", targets: ["MTASTSCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // zlib (gzip for TLS reports) through a tiny system-library shim; no extra package.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // glibc's libresolv through a small C shim; DNS look-ups with the AD bit.
        .systemLibrary(name: "CResolv", path: "Sources/CResolv"),
        .target(name: "MailDNS", dependencies: ["CResolv"]),
        // Values and parsers, no I/O.
        .target(name: "MTASTSCore", dependencies: ["CZlib"]),
        // Commands, text/JSON output, exit codes.
        .target(name: "MTASTSCLI", dependencies: [
            "MTASTSCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "mtasts", dependencies: ["MTASTSCLI"]),
        // Golden vectors are read from the source tree (input beside expected output).
        .testTarget(name: "MTASTSCoreTests", dependencies: ["MTASTSCore"], exclude: ["Vectors"]),
        .testTarget(name: "MTASTSCLITests", dependencies: ["mtasts", "MTASTSCore"]),
        // Real components for tests: dnsmasq, test CAs, local HTTPS and SMTP servers.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "MailDNSTests", dependencies: ["MailDNS", "TestSupport"]),
    ]
)
