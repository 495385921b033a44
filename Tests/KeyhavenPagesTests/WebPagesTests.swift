import Foundation
import HTTPTypes
import KeyhavenCore
import KeyhavenTestSupport
import KeyhavenWeb
import Testing

@testable import KeyhavenPages

/// The web pages' rules that a browser test cannot reach cheaply: ownership, hostile forms, redirects, language.
@Suite("Web pages")
struct WebPagesTests {
    static func urlEncoded(_ fields: [(String, String)]) -> Data {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return Data(
            fields.map { name, value in
                "\(name.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")="
                    + "\(value.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")"
            }.joined(separator: "&").utf8)
    }

    static func multipart(_ fields: [(String, String)], boundary: String = "keyhaven-test-boundary") -> Data {
        var body = ""
        for (name, value) in fields {
            body += "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n"
        }
        return Data((body + "--\(boundary)--\r\n").utf8)
    }

    static let awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    static let multipartType = "multipart/form-data; boundary=keyhaven-test-boundary"
    static let formType = "application/x-www-form-urlencoded"

    func post(
        _ api: APIHarness, _ path: String, as user: TestUser, _ body: Data, contentType: String = Self.formType
    ) async throws -> APIResponse {
        try await api.request(
            .post, path, auth: .sessionWithoutCSRF(cookie: user.cookie), json: body, contentType: contentType)
    }

    @Test(
        "another user's integration answers 404 on every page and action, and stays as it was",
        arguments: TestDatabase.all)
    func crossUser(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let owner = try await api.user()
            let stranger = try await api.user()
            let id = try await api.openAIIntegration(for: owner.session, name: "owned")
            let before = try await api.request(.get, "/api/integrations/\(id)", auth: owner.session).json
            for path in ["/integrations/\(id)", "/integrations/\(id)/card", "/integrations/\(id)/delete"] {
                let response = try await api.request(.get, path, auth: .sessionWithoutCSRF(cookie: stranger.cookie))
                #expect(response.status == .notFound, "\(path)")
                #expect(response.text.contains("No encontrado"), "\(path): the HTML error page")
            }
            for action in ["test", "rename", "enable", "disable", "delete"] {
                let response = try await post(
                    api, "/integrations/\(id)/\(action)", as: stranger,
                    Self.urlEncoded([("csrf_token", stranger.csrf), ("name", "taken"), ("confirm_name", "owned")]))
                #expect(response.status == .notFound, "\(action)")
            }
            let replace = try await post(
                api, "/integrations/\(id)/credentials", as: stranger,
                Self.multipart([("csrf_token", stranger.csrf), ("api_key", "sk-test-00000000000000000000")]),
                contentType: Self.multipartType)
            #expect(replace.status == .notFound)
            let after = try await api.request(.get, "/api/integrations/\(id)", auth: owner.session).json
            #expect(after["name"] as? String == "owned")
            #expect(after["enabled"] as? Bool == true)
            #expect(after["credential_version"] as? Int == before["credential_version"] as? Int)
            #expect(after["updated_at"] as? String == before["updated_at"] as? String)
        }
    }

    @Test("without a session a page sends the browser to sign in, and a form changes nothing")
    func signedOut() async throws {
        try await APIHarness.with(.sqlite) { api in
            let page = try await api.request(.get, "/integrations?cursor=x")
            #expect(page.status == .seeOther)
            #expect(page.headers[.location] == "/login?next=%2Fintegrations%3Fcursor%3Dx")
            let user = try await api.user()
            let forged = try await api.request(
                .post, "/integrations",
                json: Self.multipart([
                    ("csrf_token", user.csrf), ("type", "openai"), ("name", "x"),
                    ("api_key", "sk-test-00000000000000000000"),
                ]),
                contentType: Self.multipartType)
            #expect(forged.status == .seeOther)
            #expect(try await api.runtime.integrations.list(ownerID: user.id, limit: 10, after: nil).isEmpty)
        }
    }

    @Test("a form posted with the wrong CSRF token, or none, is refused and changes nothing")
    func csrf() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            for token in [nil, "", "wrong", String(user.csrf.dropLast()) + "x"] as [String?] {
                var fields = [("type", "openai"), ("name", "forged"), ("api_key", "sk-test-00000000000000000000")]
                if let token { fields.append(("csrf_token", token)) }
                let response = try await post(
                    api, "/integrations", as: user, Self.multipart(fields), contentType: Self.multipartType)
                #expect(response.status == .forbidden)
            }
            #expect(try await api.runtime.integrations.list(ownerID: user.id, limit: 10, after: nil).isEmpty)
        }
    }

    @Test("hostile form bodies get a clear 4xx page, never a 500, and create nothing")
    func hostileBodies() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let valid = Self.multipart([
                ("csrf_token", user.csrf), ("type", "openai"), ("name", "n"),
                ("api_key", "sk-test-00000000000000000000"),
            ])
            var bodies: [(String, Data, String)] = [
                ("no boundary", valid, "multipart/form-data"),
                ("other boundary", valid, "multipart/form-data; boundary=other"),
                ("boundary too long", valid, "multipart/form-data; boundary=" + String(repeating: "b", count: 71)),
                ("truncated", valid.prefix(valid.count / 2), Self.multipartType),
                ("no closing boundary", valid.dropLast(30), Self.multipartType),
                (
                    "invalid UTF-8",
                    Data("--keyhaven-test-boundary\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n".utf8)
                        + Data([0xFF, 0xFE, 0xC0]) + Data("\r\n--keyhaven-test-boundary--\r\n".utf8), Self.multipartType
                ),
                (
                    "part without a name",
                    Data(
                        """
                        --keyhaven-test-boundary\r\nContent-Disposition: \
                        form-data\r\n\r\nx\r\n--keyhaven-test-boundary--\r\n
                        """
                        .utf8), Self.multipartType
                ),
                ("bad percent encoding", Data("csrf_token=\(user.csrf)&name=%E0%A4%A".utf8), Self.formType),
                ("invalid UTF-8 percent-encoded", Data("csrf_token=\(user.csrf)&name=%FF%FE".utf8), Self.formType),
                (
                    "too many fields", Self.urlEncoded([("csrf_token", user.csrf)] + (0..<100).map { ("f\($0)", "v") }),
                    Self.formType
                ),
                ("too large", Data(repeating: 0x61, count: 70 * 1024), Self.formType),
                ("JSON", Data("{\"name\":\"x\"}".utf8), "application/json"),
                ("no content type", valid, ""),
            ]
            var generator = SystemRandomNumberGenerator()
            for index in 0..<30 {
                let noise = Data(
                    (0..<Int.random(in: 0..<2048, using: &generator)).map { _ in
                        UInt8.random(in: 0...255, using: &generator)
                    })
                bodies.append(("random bytes \(index)", noise, index % 2 == 0 ? Self.multipartType : Self.formType))
            }
            for (label, body, contentType) in bodies {
                let response = try await post(api, "/integrations", as: user, body, contentType: contentType)
                #expect((400..<500).contains(response.status.code), "\(label): \(response.status)")
                #expect(response.headers[.contentType]?.hasPrefix("text/html") == true, "\(label)")
            }
            #expect(try await api.runtime.integrations.list(ownerID: user.id, limit: 10, after: nil).isEmpty)
            #expect(try await api.request(.get, "/healthz").status == .ok)
        }
    }

    @Test("hostile values in every field of the form are refused next to their field or saved and checked; never a 500")
    func hostileFields() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let valid: [String: String] = [
                "name": "Production", "access_key_id": "AKIAQWERTYUIOPASDFGH", "secret_access_key": Self.awsSecret,
                "region": "us-east-1",
            ]
            var statuses: [Int: Int] = [:]
            for field in valid.keys.sorted() {
                for hostile in HostileValues.around(valid[field]!, maximumPositions: 6) {
                    guard let text = hostile.string else { continue }
                    var fields = [("csrf_token", user.csrf), ("type", "aws")]
                    for (name, value) in valid.sorted(by: { $0.key < $1.key }) {
                        fields.append((name, name == field ? text : value))
                    }
                    let response = try await post(
                        api, "/integrations", as: user, Self.multipart(fields), contentType: Self.multipartType)
                    statuses[Int(response.status.code), default: 0] += 1
                    // Saved and checked (303), or refused next to a field: invalid (422), or a name already
                    // taken (409).
                    #expect([303, 409, 422].contains(response.status.code), "\(field) \(hostile): \(response.status)")
                    if response.status.code != 303 {
                        #expect(
                            response.text.contains("field-error"),
                            "\(field) \(hostile): the problem is shown by the field")
                        #expect(!response.text.contains(Self.awsSecret), "the secret is not echoed")
                    }
                }
            }
            #expect(statuses[422, default: 0] > 0)
            #expect(try await api.request(.get, "/healthz").status == .ok)
        }
    }

    @Test(
        """
        the rotation policy and Rotar ahora from the detail page: \
        saved, refused where the provider cannot, never for a stranger
        """,
        arguments: TestDatabase.all)
    func rotationForms(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let owner = try await api.user()
            let stranger = try await api.user()
            let aws = try await api.runtime.integrations.create(
                ownerID: owner.id, name: "aws", type: .aws, config: [:],
                credentials: .aws(
                    accessKeyID: "AKIAQWERTYUIOPASDFGH", secretAccessKey: Self.awsSecret, sessionToken: nil),
                actor: .system)
            let openai = try await api.runtime.integrations.create(
                ownerID: owner.id, name: "openai", type: .openai, config: [:],
                credentials: .apiKey("sk-test-00000000000000000000"), actor: .system)
            let policy = [("mode", "automatic"), ("every_days", "30"), ("grace_hours", "1")]
            let saved = try await post(
                api, "/integrations/\(aws.id.uuidString.lowercased())/rotation", as: owner,
                Self.urlEncoded([("csrf_token", owner.csrf)] + policy))
            #expect(saved.status == .seeOther)
            #expect(
                try await api.runtime.integrations.get(id: aws.id, ownerID: owner.id).rotation
                    == RotationPolicy(mode: .automatic, everyDays: 30, graceHours: 1))
            let refused = try await post(
                api, "/integrations/\(openai.id.uuidString.lowercased())/rotation", as: owner,
                Self.urlEncoded([("csrf_token", owner.csrf)] + policy))
            #expect(refused.status == .unprocessableContent)
            #expect(refused.text.contains("la rotación automática solo es posible"))
            #expect(try await api.runtime.integrations.get(id: openai.id, ownerID: owner.id).rotation == .off)
            let rotate = "/integrations/\(aws.id.uuidString.lowercased())/rotate"
            #expect(
                try await post(api, rotate, as: owner, Self.urlEncoded([("csrf_token", owner.csrf)])).status
                    == .seeOther)
            let again = try await post(api, rotate, as: owner, Self.urlEncoded([("csrf_token", owner.csrf)]))
            #expect(again.status == .conflict)
            #expect(
                try await api.runtime.rotations.rotations(integrationID: aws.id, ownerID: owner.id, limit: 10).count
                    == 1)
            for path in [rotate, "/integrations/\(aws.id.uuidString.lowercased())/rotation"] {
                let response = try await post(
                    api, path, as: stranger, Self.urlEncoded([("csrf_token", stranger.csrf)] + policy))
                #expect(response.status == .notFound, "\(path)")
            }
            let page = try await api.request(
                .get, "/integrations/\(aws.id.uuidString.lowercased())", auth: .sessionWithoutCSRF(cookie: owner.cookie)
            )
            #expect(page.text.contains("Rotación de credenciales") && page.text.contains("solicitada"))
        }
    }

    @Test(
        "an integration's page prints no optional: no notice without one, and a failed check in the reader's language")
    func detailPageTexts() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session, name: "unreachable")
            let integration = try await api.runtime.integrations.get(
                id: try #require(UUID(uuidString: id)), ownerID: user.id)
            let message = "The provider could not be reached. Could not resolve api.anthropic.com."
            let record = VerificationRecord(
                outcome: .unreachable, errorMessage: message, details: [:], checkedAt: Date(),
                latency: .milliseconds(5),
                detail: .unresolvableHost("api.anthropic.com"))
            try await api.runtime.integrations.recordVerification(
                record, for: integration, action: .integrationVerify, actor: .system)
            let page = try await api.request(
                .get, "/integrations/\(id)", auth: .sessionWithoutCSRF(cookie: user.cookie))
            #expect(page.status == .ok)
            #expect(!page.text.contains(">nil<") && !page.text.contains("Optional("))
            #expect(!page.text.contains("alert-success"), "no notice without a done=")
            #expect(
                page.text.contains(
                    "No se pudo contactar con el proveedor. No se pudo resolver el nombre api.anthropic.com."))
            #expect(!page.text.contains("Could not resolve"))
            let english = try await api.request(
                .get, "/integrations/\(id)?done=renamed",
                headers: [.cookie: "keyhaven_session=\(user.cookie)", .acceptLanguage: "en"])
            #expect(english.text.contains(message) && english.text.contains("Name updated."))
            // The API's text stays the English one.
            let read = try await api.request(.get, "/api/integrations/\(id)", auth: user.session)
            #expect(read.json["error_message"] as? String == message)
        }
    }

    @Test("error pages carry the header and the language switch with the page's token, signed in or out")
    func errorPages() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let html: HTTPFields = [.accept: "text/html"]
            var signedIn = html
            signedIn[.cookie] = "keyhaven_session=\(user.cookie)"
            for path in ["/no-such-page", "/integrations/00000000-0000-7000-8000-000000000000"] {
                let page = try await api.request(.get, path, headers: signedIn)
                #expect(page.status == .notFound, "\(path)")
                #expect(page.text.contains("No encontrado") && page.text.contains(user.email), "\(path)")
                #expect(
                    page.text.contains(#"<input type="hidden" name="csrf_token" value="\#(user.csrf)">"#), "\(path)")
                #expect(page.text.contains(#"action="/language""#), "\(path)")
            }
            let signedOut = try await api.request(.get, "/no-such-page", headers: html)
            #expect(signedOut.status == .notFound && signedOut.text.contains(#"action="/language""#))
            let form = signedOut.headers[values: .setCookie].first { $0.hasPrefix("keyhaven_form=") }
            let token = try #require(form?.dropFirst("keyhaven_form=".count).prefix { $0 != ";" })
            #expect(signedOut.text.contains(#"<input type="hidden" name="form_token" value="\#(token)">"#))
            // A form without its token says the form expired; a role that may not act says so instead.
            let forged = try await post(api, "/integrations", as: user, Self.urlEncoded([("type", "openai")]))
            #expect(forged.status == .forbidden && forged.text.contains("El formulario caducó"))
            var english = signedIn
            english[.acceptLanguage] = "en"
            let missing = try await api.request(.get, "/orgs/00000000-0000-7000-8000-000000000000", headers: english)
            #expect(
                missing.status == .notFound && missing.text.contains("Not found") && missing.text.contains("Español"))
        }
    }

    @Test("sign-in sends the browser back only to a page of this site")
    func localRedirects() {
        for good in ["/integrations", "/integrations/abc?x=1", "/"] { #expect(WebPages.localPath(good) == good) }
        for bad in [
            "//evil.example", "https://evil.example", "/\\evil.example", "evil", "", "/a b", "/\u{0}x", "/\u{202E}",
        ] {
            #expect(WebPages.localPath(bad) == nil, "\(bad)")
        }
    }

    @Test("Accept-Language picks the preferred supported language; the remembered choice wins; Spanish otherwise")
    func languages() {
        #expect(Language.negotiate(cookie: nil, acceptLanguage: "en-US,en;q=0.9,es;q=0.8") == .en)
        #expect(Language.negotiate(cookie: nil, acceptLanguage: "fr-FR, en;q=0.5, es;q=0.7") == .es)
        #expect(Language.negotiate(cookie: nil, acceptLanguage: "es-MX") == .es)
        #expect(Language.negotiate(cookie: nil, acceptLanguage: "en;q=0, es;q=0") == .es)
        #expect(Language.negotiate(cookie: nil, acceptLanguage: "de") == .es)
        #expect(Language.negotiate(cookie: nil, acceptLanguage: String(repeating: "x;q=,", count: 10_000)) == .es)
        #expect(Language.negotiate(cookie: "en", acceptLanguage: "es") == .en)
        #expect(Language.negotiate(cookie: "xx", acceptLanguage: "en") == .en)
        #expect(Language.negotiate(cookie: nil, acceptLanguage: nil) == .es)
    }

    @Test("times read naturally in both languages")
    func relativeTimes() throws {
        let localization = try Localization.bundled()
        let (es, en) = (localization.texts(.es), localization.texts(.en))
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(es.relative(now.addingTimeInterval(-300), now: now) == "hace 5 minutos")
        #expect(en.relative(now.addingTimeInterval(-300), now: now) == "5 minutes ago")
        #expect(es.relative(now.addingTimeInterval(-60), now: now) == "hace 1 minuto")
        #expect(en.relative(now.addingTimeInterval(-10), now: now) == "just now")
        #expect(es.relative(now.addingTimeInterval(-7200), now: now) == "hace 2 horas")
        #expect(en.relative(now.addingTimeInterval(-86400 * 3), now: now) == "3 days ago")
        #expect(en.relative(now.addingTimeInterval(-86400 * 400), now: now) == "2025-12-11")
    }

    @Test("a check's problem is shown in the reader's language, by its code; the provider's own words are folded away")
    func errorMessages() throws {
        let localization = try Localization.bundled()
        let (es, en) = (localization.texts(.es), localization.texts(.en))
        let dns = VerificationProblem(
            outcome: .unreachable, detail: .unresolvableHost("api.anthropic.com"),
            message: "The provider could not be reached. Could not resolve api.anthropic.com.")
        let spanish = ProblemView(dns, texts: es)
        #expect(spanish.sentence == "No se pudo contactar con el proveedor.")
        #expect(spanish.detail == "No se pudo resolver el nombre api.anthropic.com.")
        #expect(spanish.original == nil)
        let english = ProblemView(dns, texts: en)
        #expect("\(english.sentence) \(english.detail ?? "")" == dns.message)
        let said = VerificationProblem(
            outcome: .invalidCredentials,
            detail: .provider(code: "InvalidClientTokenId", message: "The token is invalid."),
            message: "The provider rejected the credentials. InvalidClientTokenId: The token is invalid.")
        let folded = ProblemView(said, texts: es)
        #expect(folded.sentence == "El proveedor rechazó las credenciales.")
        #expect(folded.detail == "Código del proveedor: InvalidClientTokenId")
        #expect(folded.original?.text == "The token is invalid." && folded.original?.inline == false)
        #expect(ProblemView(said, texts: en).original?.inline == true)
        // A message no problem describes (written by something other than a check) is not shown in English.
        let bare = ProblemView(message: "The stored credentials could not be decrypted.", texts: es)
        #expect(bare.sentence == es["problem_recorded"] && bare.original?.inline == false)
        // The problem is read back only while it still describes the stored message.
        let stored = JSONValue.object([VerificationProblem.storedKey: dns.json]).jsonText
        #expect(VerificationProblem(stored: stored, message: dns.message) == dns)
        #expect(VerificationProblem(stored: stored, message: "The stored credentials could not be decrypted.") == nil)
    }

    @Test(
        "both languages have the same texts, with the same placeholders; every text a template or the code uses exists")
    func interfaceTexts() throws {
        let localization = try Localization.bundled()
        let (es, en) = (try #require(localization.tables[.es]), try #require(localization.tables[.en]))
        #expect(Set(es.keys) == Set(en.keys), "\(Set(es.keys).symmetricDifference(en.keys).sorted())")
        func placeholders(_ text: String) -> Set<String> { Self.matches(#"\{([a-z_]+)\}"#, in: text) }
        for (key, text) in es { #expect(placeholders(text) == placeholders(en[key] ?? ""), "\(key)") }
        var used = Set<String>()
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../Sources/KeyhavenPages")
        let templates = try FileManager.default.contentsOfDirectory(
            at: sources.appendingPathComponent("Resources/Templates"), includingPropertiesForKeys: nil)
        for file in templates {
            used.formUnion(Self.matches(#"\bt\.([a-z0-9_]+)"#, in: try String(contentsOf: file, encoding: .utf8)))
        }
        #expect(used.count > 100, "the templates were read")
        let code = try FileManager.default.contentsOfDirectory(at: sources, includingPropertiesForKeys: nil)
        for file in code where file.pathExtension == "swift" {
            let text = try String(contentsOf: file, encoding: .utf8)
            used.formUnion(Self.matches(#"(?:texts|self)\["([a-z0-9_.]+)"\]"#, in: text))
            used.formUnion(Self.matches(#"format\(\s*"([a-z0-9_.]+)""#, in: text))
        }
        #expect(used.contains("budget_used") && used.contains("problem_recorded"), "the code was read")
        // Keys the code makes from values.
        used.formUnion(FieldProblem.Code.allCases.map { "problem.\($0.rawValue)" })
        used.formUnion(AuditAction.allCases.map { "action.\($0.rawValue)" })
        used.formUnion(VerificationDetail.UnbuiltRequest.allCases.map { "detail.reason.\($0.rawValue)" })
        used.formUnion(VerificationDetail.AzureRefusal.allCases.map { "detail.azure.\($0.rawValue)" })
        used.formUnion(
            VerificationDetail.Code.allCases.filter { ![.azure, .provider].contains($0) }.map {
                "detail.\($0.rawValue)"
            })
        used.formUnion(["detail.provider_code", "time.just_now"])
        used.formUnion(["minutes", "hours", "days"].flatMap { ["time.\($0).one", "time.\($0).other"] })
        // The first six providers have texts of their own; the catalog's others are named by the catalog and
        // described by one text.
        used.formUnion(
            [IntegrationType.openai, .anthropic, .gemini, .googleCloud, .aws, .azure].flatMap {
                ["type_\($0.rawValue)", "desc_\($0.rawValue)"]
            })
        used.formUnion(
            ["desc_api_key_of", "setting_optional"] + ProviderEntry.Group.allCases.map { "providers_\($0.rawValue)" })
        used.formUnion([IntegrationStatus.verifying, .connected, .error, .disabled].map { "status_\($0.rawValue)" })
        used.formUnion(WorkspaceRole.allCases.map { "role_\($0.rawValue)" })
        used.formUnion(RotationPolicy.Mode.allCases.map { "mode_\($0.rawValue)" })
        used.formUnion(RotationState.allCases.map { "rotation_\($0.rawValue)" })
        used.formUnion(["success", "failure", "denied"].map { "outcome_\($0)" })
        used.formUnion(["user", "service", "system", "operator"].map { "actor_\($0)" })
        used.formUnion((IntegrationPages.flashes + ["revoked"]).map { "\($0)_flash" })
        used.formUnion((OrganizationPages.flashes + ["deleted", "left", "pending"]).map { "org_\($0)_flash" })
        used.formUnion(Invitation.State.allCases.filter { $0 != .pending }.map { "invitation_\($0.rawValue)" })
        let errors: [KeyhavenError] = [
            .notFound, .forbidden(""), .rateLimited(retryAfterSeconds: 1), .badRequest(""), .payloadTooLarge,
            .unavailable(""), .internalError,
        ]
        for error in errors {
            for formToken in [true, false] {
                let (title, body) = ErrorPages.keys(error, formToken: formToken)
                used.formUnion([title, body])
            }
        }
        let missing = used.filter { es[$0] == nil }.sorted()
        #expect(missing.isEmpty, "\(missing)")
        // The English of a check's detail is the API's own text.
        let texts = localization.texts(.en)
        let details: [VerificationDetail] =
            [
                .unresolvableHost("api.example.com"), .noAccessToken, .modelListMissing, .callerIdentityMissing,
                .tokenURINotGoogle, .privateKeyUnreadable, .storedCredentialsMalformed(fields: "credentials"),
                .storedSettingsInvalid(fields: "config.region"), .timedOut,
            ] + VerificationDetail.UnbuiltRequest.allCases.map { .requestNotBuilt($0) }
            + VerificationDetail.AzureRefusal.allCases.map { .azure(code: "AADSTS1", $0) }
        for detail in details { #expect(texts.detail(detail) == detail.text) }
        let problems: [FieldProblem] = [
            .required, .unknownField, .email, .controlCharacters, .tooCommon, .name, .nameTaken, .fileOrPaste,
            .chooseOne,
            .expiryDays, .rotationMode, .rotationAutomatic, .rotationEveryDays, .rotationGraceHours,
            .serviceAccountFile,
            .tooShort(minimum: 12), .tooLong(maximum: 256), .apiKey(example: "sk-…"),
        ]
        for problem in problems { #expect(texts.problem(problem) == problem.text) }
    }

    static func matches(_ pattern: String, in text: String) -> Set<String> {
        guard let expression = try? NSRegularExpression(pattern: pattern) else { return [] }
        let range = NSRange(text.startIndex..., in: text)
        return Set(
            expression.matches(in: text, range: range).compactMap { match in
                Range(match.range(at: 1), in: text).map { String(text[$0]) }
            })
    }
}
