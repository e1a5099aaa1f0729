import Foundation

/// dkimpy (PyPI), the independent DKIM signer and verifier of the tests, in the venv that
/// `scripts/setup.sh` makes. `check()` fails with the name of what is missing: dkimpy itself, or
/// PyNaCl, which dkimpy needs for Ed25519 and which a machine may lack while RSA still works.
public enum DKIMPy {
    public static let python = "/opt/mtasts-tools/venv/bin/python"

    public struct Missing: Error, CustomStringConvertible {
        public var description: String
    }

    public static func check() throws {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw Missing(description: "dkimpy is not installed: \(python) does not exist (scripts/setup.sh makes it)")
        }
        let out = try CLI.run(["-c", """
            import sys
            try:
                import dkim
            except ImportError as e:
                sys.exit('dkimpy is not installed in the venv (pip install dkimpy==1.1.8): %s' % e)
            try:
                import nacl.signing
            except ImportError as e:
                sys.exit('PyNaCl is not installed: dkimpy needs it to sign and verify Ed25519 (pip install pynacl==1.6.2): %s' % e)
            """], executable: URL(fileURLWithPath: python))
        if out.status != 0 { throw Missing(description: out.stderr.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}
