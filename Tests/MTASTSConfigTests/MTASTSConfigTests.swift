import MTASTSConfig
import MTASTSCore
import Testing

@Suite struct DaemonConfigTests {
    // A postfix-mta-sts-resolver configuration is accepted as it is.
    @Test("the reference daemon's keys are accepted") func reference() throws {
        let config = try DaemonConfig.parse("""
            host: 127.0.0.1
            port: 8461
            reuse_port: true
            shutdown_timeout: 20
            cache:
              type: sqlite
              options:
                filename: "/var/lib/mta-sts/cache.db"
            default_zone:
              strict_testing: false
              timeout: 4
            zones:
              myzone:
                strict_testing: true
                timeout: 4
            """, file: "mta-sts-daemon.yml")
        #expect(config.cache == .sqlite(path: "/var/lib/mta-sts/cache.db"))
        #expect(config.zone("myzone").strictTesting)
        #expect(!config.zone("unknown").strictTesting)
    }

    @Test("errors name the file and line, and are configuration errors") func errors() {
        func error(_ text: String) -> DaemonConfig.ConfigError? {
            do { _ = try DaemonConfig.parse(text, file: "d.yml"); return nil } catch { return error }
        }
        let unknown = error("port: 8461\nportt: 1\n")
        #expect(unknown?.description == "d.yml:2: unknown key 'portt'")
        #expect(unknown?.mtastsError.code == .configuration)
        #expect(unknown?.mtastsError.temporary == false)
        #expect(error("port: eighty\n")?.description.contains("port must be a whole number from 1 to 65535") == true)
        #expect(error("cache:\n  type: redis\n")?.description.contains("use type 'postgres'") == true)
        #expect(error("cache:\n  type: postgres\n")?.description.contains("needs options.dsn") == true)
        #expect(error("zones: [a, b\n")?.description.contains("not valid YAML") == true)
        // A failure reply must never lower Postfix's own level: none is refused, unset is NOTFOUND.
        #expect(error("policy_failure_level: none\n")?.description.contains("none would send mail in clear") == true)
        #expect((try? DaemonConfig.parse("port: 8461\n", file: "d.yml"))?.policyFailureLevel == nil)
        #expect((try? DaemonConfig.parse("policy_failure_level: encrypt\n", file: "d.yml"))?.policyFailureLevel == "encrypt")
        // The collector's backlog must hold at least one batch.
        #expect(error("collector:\n  batch_size: 5000\n  max_backlog: 2000\n")?.description.contains("above collector.max_backlog") == true)
        // The default batch follows a smaller backlog instead of refusing it.
        #expect((try? DaemonConfig.parse("collector:\n  max_backlog: 2000\n", file: "d.yml"))?.collector?.batchSize == 2_000)
    }
}

@Suite struct ServeConfigTests {
    @Test("limits, api_public and policies") func serve() throws {
        let config = try ServeConfig.parse("""
            listen: ["0.0.0.0:443", "[::1]:8080"]
            reports:
              api_public: true
            limits:
              max_connections: 500
              max_per_address: 10
              idle_timeout: 15
              header_timeout: 5
              body_timeout: 20
              handshake_timeout: 3
            policies:
              example.com: {mode: enforce, mx: [mx.example.com], max_age: 86400}
            """, file: "serve.yml")
        #expect(config.listen.map(\.host) == ["0.0.0.0", "::1"])
        #expect(config.apiPublic)
        #expect(config.maxConnections == 500 && config.maxPerAddress == 10)
        #expect(config.idleTimeout == 15 && config.headerTimeout == 5 && config.bodyTimeout == 20 && config.handshakeTimeout == 3)
        #expect(config.policies["example.com"] == "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n")
    }

    @Test("a bad value is an error with its line") func errors() {
        func message(_ text: String) -> String {
            do { _ = try ServeConfig.parse(text, file: "s.yml"); return "" } catch { return error.description }
        }
        #expect(message("limits:\n  header_timeout: 0\n").hasPrefix("s.yml:2: limits.header_timeout must be a number from 0.1"))
        #expect(message("listen: nowhere\n").contains("listen must be HOST:PORT"))
        #expect(message("policies:\n  example.com: {mode: enforce}\n").contains("needs mx"))
        #expect(message("policies:\n  example.com: \"version: STSv1\\nmode: sometimes\\n\"\n").contains("is not valid"))
        // The dashboard, watch and alerts sections.
        #expect(message("dashboard:\n  users:\n    alice: hunter2\n").contains("must be a bcrypt hash (htpasswd -nbB alice PASSWORD"))
        #expect(message("alerts:\n  webhook: http://chat.example/x\n").contains("must be https URLs"))
        #expect(message("alerts:\n  mail:\n    to: \"a@b.example\\r\\nBcc: c@d\"\n    server: smtp.example:25\n").contains("is not a mailbox"))
        #expect(message("alerts:\n  mail:\n    to: a@b.example\n").contains("needs to and server"))
        #expect(message("watch:\n  domains: [\"not a domain\"]\n").contains("is not a domain name"))
        #expect(message("watch:\n  interval: 1\n").contains("watch.interval must be a number from 10"))
    }

    @Test("dashboard, watch and alerts") func watchAndAlerts() throws {
        let config = try ServeConfig.parse("""
            dashboard:
              users: {alice: "$2b$04$abcdefghijklmnopqrstuu5C5NT4LkXl0cqnbk7tH0vYzrU8a8eR2"}
              public_url: "https://tlsrpt.example.com/"
            watch:
              domains: [Example.COM, example.org]
              interval: 600
              smtp: false
            alerts:
              webhook: [https://chat.example/a, https://chat.example/b]
              mail: {to: [pm@example.com], from: m@example.com, server: "smtp.example.com:587", tls: starttls}
              success_rate_below: off
              certificate_days: 21
              interval: 60
            """, file: "serve.yml")
        #expect(config.dashboard.users.keys.sorted() == ["alice"] && config.dashboard.publicURL == "https://tlsrpt.example.com")
        #expect(config.watch.domains == ["example.com", "example.org"] && config.watch.interval == 600 && !config.watch.smtp)
        #expect(config.alerts.webhooks.count == 2 && config.alerts.mailTo == ["pm@example.com"] && config.alerts.mailServer?.port == 587)
        #expect(config.alerts.successRateBelow == nil && config.alerts.certificateDays == 21 && config.alerts.interval == 60 && config.alerts.configured)
        #expect(ServeConfig().alerts.successRateBelow == 95 && !ServeConfig().alerts.configured && ServeConfig().dashboard.enabled)
    }
}
