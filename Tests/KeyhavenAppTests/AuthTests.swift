import Foundation
import HTTPTypes
import HummingbirdBcrypt
import KeyhavenApp
import KeyhavenCore
import KeyhavenServices
import KeyhavenTestSupport
import KeyhavenWeb
import SQLKit
import Testing

@Suite("Accounts and sessions")
struct AuthTests {
    @Test("sign-up, me, logout and login work with a bcrypt cost of at least 12", arguments: TestDatabase.all)
    func lifecycle(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.signup(email: "Ada@Example.test")
            let me = try await api.request(.get, "/api/auth/me", auth: user.session)
            #expect(me.status == .ok)
            #expect((me.json["user"] as? [String: Any])?["email"] as? String == "ada@example.test")
            #expect(me.json["csrf_token"] as? String == user.csrf)
            let hash = try await api.handle.database.transaction { sql in
                try await sql.raw("SELECT password_hash FROM users WHERE id = \(bind: user.id)").first()!
                    .decode(column: "password_hash", as: String.self)
            }
            // The whole password, pre-hashed, then bcrypt at cost 12.
            #expect(hash.hasPrefix("kh1:$2b$12$") || hash.hasPrefix("kh1:$2a$12$") || hash.hasPrefix("kh1:$2y$12$"))

            #expect(try await api.request(.post, "/api/auth/logout", auth: user.session).status == .noContent)
            #expect(try await api.request(.get, "/api/auth/me", auth: user.session).status == .unauthorized)

            let wrong = try await api.request(
                .post, "/api/auth/login", json: ["email": "ada@example.test", "password": "not the password 123"])
            let unknown = try await api.request(
                .post, "/api/auth/login", json: ["email": "nobody@example.test", "password": "not the password 123"])
            #expect(wrong.status == .unauthorized && unknown.status == .unauthorized)
            #expect(wrong.text == unknown.text, "the answer must not reveal whether the email exists")

            let login = try await api.request(
                .post, "/api/auth/login", json: ["email": "ADA@example.test", "password": Fixtures.password])
            #expect(login.status == .ok)
            let cookie = try #require(login.headers[.setCookie])
            #expect(cookie.hasPrefix("keyhaven_session="))
            #expect(cookie.contains("HttpOnly") && cookie.lowercased().contains("samesite=lax"))

            let duplicate = try await api.request(
                .post, "/api/auth/signup", json: ["email": "ada@EXAMPLE.test", "password": Fixtures.password])
            #expect(duplicate.status == .conflict)

            let actions = try await api.runtime.audit.events(
                ownerID: user.id, integrationID: nil, limit: 50, before: nil
            )
            .map { "\($0.action):\($0.outcome)" }
            #expect(actions.contains("auth.signup:success"))
            #expect(actions.contains("auth.logout:success"))
            #expect(actions.contains("auth.login:failure"))
            #expect(actions.contains("auth.login:success"))
        }
    }

    @Test("passwords shorter than 12 characters or on the common list are refused", arguments: TestDatabase.all)
    func passwordPolicy(kind: TestDatabase) async throws {
        #expect(PasswordPolicy.commonPasswordCount >= 1000)
        try await APIHarness.with(kind) { api in
            for password in ["short pass", "1qaz2wsx3edc", "QWERTY123456", "leavemealone"] {
                let response = try await api.request(
                    .post, "/api/auth/signup", json: ["email": "p@example.test", "password": password])
                #expect(response.status == .unprocessableContent, "\(password)")
                #expect(response.fields["password"] != nil)
                #expect(!response.text.contains(password))
            }
            let bad = try await api.request(
                .post, "/api/auth/signup", json: ["email": "not-an-email", "password": Fixtures.password])
            #expect(bad.fields.keys.sorted() == ["email"])
        }
    }

    @Test("sign-up can be closed; the CLI still creates users", arguments: TestDatabase.all)
    func signupClosed(kind: TestDatabase) async throws {
        try await APIHarness.with(kind, configure: { $0.allowSignup = false }) { api in
            let response = try await api.request(
                .post, "/api/auth/signup", json: ["email": "a@example.test", "password": Fixtures.password])
            #expect(response.status == .forbidden)
        }
    }

    @Test(
        "login and sign-up are rate limited per account and per address, with Retry-After and one message",
        arguments: TestDatabase.all)
    func rateLimits(kind: TestDatabase) async throws {
        try await APIHarness.with(
            kind, configure: { $0.authRateLimits = .init(loginPerAccount: 3, loginPerAddress: 5, signupPerAddress: 2) }
        ) { api in
            let known = try await api.user(email: "known@example.test")
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<4 {
                statuses.append(
                    try await api.request(
                        .post, "/api/auth/login", json: ["email": known.email, "password": "wrong password 123"]
                    ).status)
            }
            #expect(statuses == [.unauthorized, .unauthorized, .unauthorized, .tooManyRequests])
            // Even the right password is refused while the account is limited.
            let limited = try await api.request(
                .post, "/api/auth/login", json: ["email": known.email, "password": Fixtures.password])
            #expect(limited.status == .tooManyRequests)
            let retryAfter = try #require(limited.headers[.retryAfter].flatMap { Int($0) })
            #expect(retryAfter > 0 && retryAfter <= 900)
            // Another account from the same address hits the per-address limit; the message is the same.
            let other = try await api.request(
                .post, "/api/auth/login", json: ["email": "nobody@example.test", "password": "wrong password 123"])
            #expect(other.status == .tooManyRequests)
            #expect(other.json["error"] as? NSDictionary == limited.json["error"] as? NSDictionary)
            // Sign-up per address.
            _ = try await api.request(
                .post, "/api/auth/signup", json: ["email": "s1@example.test", "password": Fixtures.password])
            _ = try await api.request(
                .post, "/api/auth/signup", json: ["email": "s2@example.test", "password": Fixtures.password])
            #expect(
                try await api.request(
                    .post, "/api/auth/signup", json: ["email": "s3@example.test", "password": Fixtures.password]
                ).status == .tooManyRequests)
        }
    }

    @Test("a successful login clears the account's failures, so only failures accumulate", arguments: TestDatabase.all)
    func successResets(kind: TestDatabase) async throws {
        try await APIHarness.with(
            kind,
            configure: { $0.authRateLimits = .init(loginPerAccount: 3, loginPerAddress: 100, signupPerAddress: 10) }
        ) { api in
            let user = try await api.user()
            var statuses: [Int] = []
            for password in [
                "wrong password 111", "wrong password 222", Fixtures.password, "wrong password 333",
                "wrong password 444", "wrong password 555", "wrong password 666",
            ] {
                statuses.append(
                    try await api.request(.post, "/api/auth/login", json: ["email": user.email, "password": password])
                        .status.code)
            }
            #expect(statuses == [401, 401, 200, 401, 401, 401, 429])
        }
    }

    @Test(
        "behind a trusted proxy, limits count the forwarded client address; otherwise the header is ignored",
        arguments: TestDatabase.all)
    func trustedProxies(kind: TestDatabase) async throws {
        let limits = AuthRateLimits(loginPerAccount: 100, loginPerAddress: 2, signupPerAddress: 10)
        @Sendable func attempts(_ api: APIHarness, from address: String, count: Int) async throws -> [Int] {
            var statuses: [Int] = []
            for index in 0..<count {
                let response = try await api.request(
                    .post, "/api/auth/login",
                    json: ["email": "n\(index)@example.test", "password": "wrong password 000"],
                    headers: [HTTPField.Name("X-Forwarded-For")!: "198.51.100.1, \(address)"])
                statuses.append(response.status.code)
            }
            return statuses
        }
        let behindProxy: (inout KeyhavenConfiguration) -> Void = { configuration in
            configuration.authRateLimits = limits
            configuration.trustedProxies = ["127.0.0.1"]
        }
        try await APIHarness.with(kind, live: true, configure: behindProxy) { api async throws in
            #expect(try await attempts(api, from: "203.0.113.5", count: 3) == [401, 401, 429])
            #expect(try await attempts(api, from: "203.0.113.6", count: 1) == [401])
        }
        try await APIHarness.with(kind, live: true, configure: { $0.authRateLimits = limits }) { api async throws in
            #expect(try await attempts(api, from: "203.0.113.5", count: 2) == [401, 401])
            #expect(
                try await attempts(api, from: "203.0.113.6", count: 1) == [429],
                "an untrusted peer cannot pick its address")
        }
    }

    @Test(
        "bodies over 64 KiB get 413, non-JSON bodies 415, malformed JSON 400, each with the JSON error body",
        arguments: TestDatabase.all)
    func limits(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let large = Data(("{\"name\":\"" + String(repeating: "x", count: 70 * 1024) + "\"}").utf8)
            let tooLarge = try await api.request(.post, "/api/integrations", auth: user.session, json: large)
            #expect(tooLarge.status == .contentTooLarge)
            #expect((tooLarge.json["error"] as? [String: Any])?["code"] as? String == "payload_too_large")
            let form = try await api.request(
                .post, "/api/integrations", auth: user.session, json: Data("name=x".utf8),
                contentType: "application/x-www-form-urlencoded")
            #expect(form.status == .unsupportedMediaType)
            let malformed = try await api.request(
                .post, "/api/integrations", auth: user.session, json: Data("{\"name\": ".utf8))
            #expect(malformed.status == .badRequest)
            for response in [tooLarge, form, malformed] {
                #expect(response.headers[.xContentTypeOptions] == "nosniff")
                #expect(response.headers[.contentSecurityPolicy] != nil)
            }
        }
    }
}

@Suite("Accounts: passwords, external logins and limits under attack")
struct AccountHardeningTests {
    @Test(
        "a NUL or control character in a password is refused at sign-up, and the whole password counts",
        arguments: TestDatabase.all)
    func wholePasswords(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            for password in [
                "\u{0000}" + String(repeating: "x", count: 20), "correct horse\u{0007}battery",
                "tab\tseparated password 1",
            ] {
                let response = try await api.request(
                    .post, "/api/auth/signup", json: ["email": "c\(UUID())@example.test", "password": password])
                #expect(response.status == .unprocessableContent, "\(password.debugDescription)")
                #expect(response.fields.keys.sorted() == ["password"])
            }
            // Two passwords that share their first 72 bytes are two passwords.
            let shared = String(repeating: "a long shared prefix ", count: 4)
            let user = try await api.signup(password: shared + "first ending")
            #expect(
                try await api.request(
                    .post, "/api/auth/login", json: ["email": user.email, "password": shared + "second ending"]
                ).status == .unauthorized)
            #expect(
                try await api.request(
                    .post, "/api/auth/login", json: ["email": user.email, "password": shared + "first ending"]
                ).status == .ok)
            // An empty password, or one with a NUL, never reaches bcrypt at login.
            for password in ["", "\u{0000}"] {
                #expect(
                    try await api.request(.post, "/api/auth/login", json: ["email": user.email, "password": password])
                        .status == .unprocessableContent)
            }
        }
    }

    @Test(
        """
        an account with an older plain bcrypt hash logs in, gets \
        the new hash, and an empty password never matches one
        """,
        arguments: TestDatabase.all)
    func legacyHashes(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let email = "legacy-\(UUID().uuidString.prefix(6).lowercased())@example.test"
            // What the old code stored for "\0" + 20 characters: bcrypt of the empty string.
            let legacy = try await api.runtime.users.create(
                email: email, passwordHash: Bcrypt.hash("", cost: 12), audit: nil)
            #expect(
                try await api.request(.post, "/api/auth/login", json: ["email": email, "password": ""]).status
                    == .unprocessableContent)
            #expect(
                try await api.request(
                    .post, "/api/auth/login", json: ["email": email, "password": "\u{0000}anything at all"]
                ).status == .unprocessableContent)
            try await api.runtime.users.setPasswordHash(Bcrypt.hash(Fixtures.password, cost: 12), userID: legacy.id)
            #expect(
                try await api.request(.post, "/api/auth/login", json: ["email": email, "password": Fixtures.password])
                    .status == .ok)
            let upgraded = try await api.runtime.users.find(email: email)?.passwordHash
            #expect(upgraded?.hasPrefix("kh1:$2") == true)
            #expect(
                try await api.request(.post, "/api/auth/login", json: ["email": email, "password": Fixtures.password])
                    .status == .ok)
        }
    }

    @Test("external JWTs: a disabled user is refused, nbf is honoured", arguments: TestDatabase.all)
    func externalJWTs(kind: TestDatabase) async throws {
        let secret = "jwt-hardening-secret-long-enough-0123456789"
        try await APIHarness.with(kind, configure: { $0.jwt = testJWTSettings(secret) }) { api in
            let subject = "external-\(UUID())"
            let token = try await jwt(secret: secret, subject: subject, expiresIn: 600)
            let me = try await api.request(.get, "/api/auth/me", auth: .bearer(token))
            #expect(me.status == .ok)
            let id = try #require((me.json["user"] as? [String: Any])?["id"] as? String)
            try await api.handle.database.transaction { sql in
                try await sql.raw(
                    "UPDATE users SET disabled_at = \(bind: Date()) WHERE id = \(bind: UUID(uuidString: id))"
                ).run()
            }
            #expect(try await api.request(.get, "/api/auth/me", auth: .bearer(token)).status == .unauthorized)
            let early = try await jwt(
                secret: secret, subject: "external-\(UUID())", expiresIn: 600, notBefore: Date().addingTimeInterval(300)
            )
            #expect(try await api.request(.get, "/api/auth/me", auth: .bearer(early)).status == .unauthorized)
            let started = try await jwt(
                secret: secret, subject: "external-\(UUID())", expiresIn: 600, notBefore: Date().addingTimeInterval(-5))
            #expect(try await api.request(.get, "/api/auth/me", auth: .bearer(started)).status == .ok)
        }
    }

    @Test(
        """
        failures from one address lock that address out of the account, \
        not its owner elsewhere; a slower limit covers every address
        """,
        arguments: TestDatabase.all)
    func loginLockout(kind: TestDatabase) async throws {
        let limits = AuthRateLimits(
            loginPerAccount: 3, loginPerAddress: 100, signupPerAddress: 10, loginPerAccountGlobally: 12)
        try await APIHarness.with(
            kind, live: true,
            configure: {
                $0.authRateLimits = limits
                $0.trustedProxies = ["127.0.0.1"]
            }
        ) { api async throws in
            let victim = try await api.user()
            @Sendable func login(_ password: String, from address: String) async throws -> Int {
                try await api.request(
                    .post, "/api/auth/login", json: ["email": victim.email, "password": password],
                    headers: [HTTPField.Name("X-Forwarded-For")!: address]
                ).status.code
            }
            var attacker: [Int] = []
            for _ in 0..<4 { attacker.append(try await login("wrong password 000", from: "203.0.113.66")) }
            #expect(attacker == [401, 401, 401, 429])
            // The owner, from their own address, is not locked out.
            #expect(try await login(Fixtures.password, from: "198.51.100.7") == 200)
            // IPv6 clients are counted by /64: a neighbour in the same /64 shares the limit, another /64 does not.
            var neighbours: [Int] = []
            for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3", "2001:db8:1:2::4"] {
                neighbours.append(try await login("wrong password 000", from: host))
            }
            #expect(neighbours == [401, 401, 401, 429])
            #expect(try await login("wrong password 000", from: "2001:db8:1:3::1") == 401)
            // Spread over many addresses, the account's own limit (12 per hour here, 10 used) still stops the guessing.
            var spread: [Int] = []
            for index in 0..<4 { spread.append(try await login("wrong password 000", from: "192.0.2.\(index + 10)")) }
            #expect(spread.last == 429)
            #expect(try await login(Fixtures.password, from: "198.51.100.7") == 429)
        }
        #expect(Accounts.limitKey("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64")
        #expect(Accounts.limitKey("::ffff:192.0.2.1") == "192.0.2.1")
        #expect(Accounts.limitKey("192.0.2.1") == "192.0.2.1")
    }

    @Test(
        "a flood of logins runs on bcrypt's own pool: credential reads are answered while it lasts",
        arguments: TestDatabase.all)
    func loginFlood(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let service = try await api.serviceToken()
            let logins = 16
            let finished = try await withThrowingTaskGroup(of: String.self) { group in
                for index in 0..<logins {
                    group.addTask {
                        _ = try await api.request(
                            .post, "/api/auth/login",
                            json: ["email": "flood\(index)@example.test", "password": "wrong password 000"])
                        return "login"
                    }
                }
                group.addTask {
                    // Give the logins a head start so they fill whatever pool they run on.
                    try await Task.sleep(for: .milliseconds(200))
                    for _ in 0..<5 {
                        let read = try await api.request(
                            .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                        guard read.status == .ok else { return "read failed \(read.status)" }
                    }
                    return "reads"
                }
                var order: [String] = []
                for try await event in group { order.append(event) }
                return order
            }
            // Shared with bcrypt, the reads would queue behind every login and finish last; on separate pools they
            // are answered while the flood lasts. (How early depends on the machine's load: the suite shares two
            // cores with every other test, so only "before the last login" is certain.)
            let readsAt = try #require(finished.firstIndex(of: "reads"), "\(finished)")
            #expect(readsAt < logins, "reads finished after all \(logins) logins")
        }
    }
}
