import Foundation
import HTTPTypes
import JWTKit
import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import Testing

@Suite("Tokens and external logins")
struct TokenTests {
    @Test(
        "a personal token is shown once, stored only as a hash, scoped, and dead once revoked",
        arguments: TestDatabase.all)
    func personalTokens(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let (id, token) = try await api.personalToken(for: user, scopes: ["integrations:read"])
            #expect(token.hasPrefix("kh_pat_"))
            let listed = try await api.request(.get, "/api/tokens", auth: user.session)
            #expect(!listed.text.contains(token))
            #expect((listed.json["tokens"] as? [[String: Any]])?.first?["scopes"] as? [String] == ["integrations:read"])
            #expect(!containsAnywhere(Data(token.utf8), in: try await api.handle.dumpEverything()))
            #expect(try await api.request(.get, "/api/integrations", auth: .bearer(token)).status == .ok)
            #expect(
                try await api.request(.post, "/api/integrations", auth: .bearer(token), json: ["name": "x"]).status
                    == .forbidden)
            let bad = try await api.request(
                .post, "/api/tokens", auth: user.session, json: ["name": "t", "scopes": ["credentials:read"]])
            #expect(bad.status == .unprocessableContent && bad.fields.keys.contains("scopes"))
            #expect(try await api.request(.delete, "/api/tokens/\(id)", auth: user.session).status == .noContent)
            #expect(try await api.request(.get, "/api/integrations", auth: .bearer(token)).status == .unauthorized)
            #expect(try await api.request(.delete, "/api/tokens/\(id)", auth: user.session).status == .notFound)
            #expect(
                try await api.request(.get, "/api/integrations", auth: .bearer(token + "x")).status == .unauthorized)
        }
    }

    @Test(
        "external JWTs: the subject becomes one user on first sight; issuer and audience are enforced when set",
        arguments: TestDatabase.all)
    func externalJWT(kind: TestDatabase) async throws {
        let secret = "external-jwt-secret-long-enough-0123456789"
        struct Claims: JWTPayload {
            var sub: SubjectClaim
            var exp: ExpirationClaim
            var iss: IssuerClaim?
            var aud: AudienceClaim?
            var email: String?
            func verify(using algorithm: some JWTAlgorithm) async throws {}
        }
        @Sendable func sign(_ claims: Claims, secret: String = secret) async throws -> String {
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            return try await keys.sign(claims)
        }
        let later = ExpirationClaim(value: Date().addingTimeInterval(600))
        try await APIHarness.with(
            kind,
            configure: {
                $0.jwt = .init(secret: secret, issuer: "https://auth.example.test", audience: "authenticated")
            }
        ) { api in
            let good = try await sign(
                Claims(
                    sub: "user-42", exp: later, iss: "https://auth.example.test", aud: "authenticated",
                    email: "u42@example.test"))
            let first = try await api.request(.get, "/api/auth/me", auth: .bearer(good))
            #expect(first.status == .ok)
            let again = try await api.request(.get, "/api/auth/me", auth: .bearer(good))
            #expect(
                (first.json["user"] as? [String: Any])?["id"] as? String == (again.json["user"] as? [String: Any])?[
                    "id"] as? String)
            #expect(first.json["csrf_token"] is NSNull)
            for claims in [
                Claims(sub: "user-42", exp: later, iss: "https://evil.example.test", aud: "authenticated"),
                Claims(sub: "user-42", exp: later, iss: nil, aud: "authenticated"),
                Claims(sub: "user-42", exp: later, iss: "https://auth.example.test", aud: "someone-else"),
                Claims(sub: "user-42", exp: later, iss: "https://auth.example.test", aud: nil),
            ] {
                #expect(
                    try await api.request(.get, "/api/auth/me", auth: .bearer(try await sign(claims))).status
                        == .unauthorized)
            }
            #expect(try await api.request(.get, "/api/auth/me", auth: .bearer("not.a.jwt")).status == .unauthorized)
            // A JWT user can use the API without a CSRF token (bearer requests carry none).
            #expect(
                try await api.request(
                    .post, "/api/integrations", auth: .bearer(good),
                    json: [
                        "name": "from jwt", "type": "openai", "credentials": "sk-jwt-user-key-0000000000",
                    ]
                ).status == .created)
        }
        // Without a configured secret, JWTs are not accepted at all.
        try await APIHarness.with(kind) { api in
            let token = try await sign(Claims(sub: "user-42", exp: later))
            #expect(try await api.request(.get, "/api/auth/me", auth: .bearer(token)).status == .unauthorized)
        }
    }
}
