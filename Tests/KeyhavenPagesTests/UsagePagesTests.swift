import Foundation
import HTTPTypes
import KeyhavenCore
import KeyhavenTestSupport
import Testing

/// The Usage page and the usage panel of an integration's detail page (SPEC §13).
@Suite("Usage pages")
struct UsagePagesTests {
    @Test("the Usage page charts the period as SVG and its numbers are the API's, in Spanish and English")
    func usagePage() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let (_, token) = try await api.serviceToken(scopes: [.usageReport])
            let id = try await api.openAIIntegration(for: user.session, name: "chat backend")
            for (index, model) in ["gpt-4o", "gpt-4o", "house-model-7"].enumerated() {
                let report: [String: Any] = [
                    "model": model, "input_tokens": 1_000, "cached_input_tokens": 400, "output_tokens": 500,
                    "idempotency_key": "page-\(index)",
                ]
                #expect(
                    try await api.request(.post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: report)
                        .status == .created)
            }
            let summary = try await api.request(.get, "/api/usage?group_by=model", auth: user.session).json
            let total = try #require(summary["total"] as? [String: Any])
            #expect(total["cost_micros"] as? Int == 14_000)
            let cookie = HTTPFields([HTTPField(name: .cookie, value: "keyhaven_session=\(user.cookie)")])
            for (language, noPrice, heading) in [
                ("es", "sin precio", "Uso y costos"), ("en", "no price", "Usage and cost"),
            ] {
                var headers = cookie
                headers[.acceptLanguage] = language
                let page = try await api.request(.get, "/usage", headers: headers)
                #expect(page.status == .ok)
                #expect(page.text.contains(heading))
                #expect(page.text.contains("<svg class=\"chart\""))
                #expect(page.text.contains("data-cost-micros=\"14000\">$0.0140 + \(noPrice)</dd>"))
                #expect(
                    page.text.contains(
                        "<tr data-model=\"house-model-7\"><th scope=\"row\">house-model-7</th><td>1</td>"))
                #expect(page.text.contains(">\(noPrice)</td>"))
                #expect(page.text.contains("chat backend"))
                let detail = try await api.request(.get, "/integrations/\(id)", headers: headers)
                #expect(detail.text.contains("data-cost-micros=\"14000\""))
                #expect(detail.text.contains("name=\"monthly_budget_usd\""))
            }
            // A budget set through the detail page's form shows as a gauge with its warning.
            let form = WebPagesTests.urlEncoded([
                ("csrf_token", user.csrf), ("monthly_budget_usd", "0.015"), ("requests_per_minute", ""),
            ])
            let saved = try await api.request(
                .post, "/integrations/\(id)/limits", auth: .sessionWithoutCSRF(cookie: user.cookie), json: form,
                contentType: WebPagesTests.formType)
            #expect(saved.status == .seeOther || saved.status == .found, "\(saved.status)")
            let limits = try await api.request(.get, "/api/integrations/\(id)/limits", auth: user.session).json
            #expect(limits["monthly_budget_usd"] as? Double == 0.015 && limits["warning"] as? Bool == true)
            var english = cookie
            english[.acceptLanguage] = "en"
            let detail = try await api.request(.get, "/integrations/\(id)", headers: english)
            #expect(detail.text.contains("<svg class=\"gauge\""))
            #expect(detail.text.contains("Budget at 80 %"))
            #expect(detail.text.contains("93 % used: $0.0140 of $0.0150"))
            // The list shows the warning on the integration's card too, and only there.
            _ = try await api.openAIIntegration(for: user.session, name: "quiet one")
            let list = try await api.request(.get, "/integrations", headers: english)
            let cards = list.text.components(separatedBy: "<article class=\"card integration\"")
            #expect(cards.first { $0.contains("chat backend") }?.contains("Budget at 80 %") == true)
            #expect(cards.first { $0.contains("quiet one") }?.contains("Budget at 80 %") == false)
            // Bad limits change nothing.
            let bad = WebPagesTests.urlEncoded([("csrf_token", user.csrf), ("monthly_budget_usd", "-5")])
            _ = try await api.request(
                .post, "/integrations/\(id)/limits", auth: .sessionWithoutCSRF(cookie: user.cookie), json: bad,
                contentType: WebPagesTests.formType)
            #expect(
                try await api.request(.get, "/api/integrations/\(id)/limits", auth: user.session).json[
                    "monthly_budget_usd"] as? Double == 0.015)
            // Another user sees neither the page's numbers nor the integration.
            let stranger = try await api.user()
            let strangerPage = try await api.request(
                .get, "/usage", headers: [.cookie: "keyhaven_session=\(stranger.cookie)"])
            #expect(!strangerPage.text.contains("chat backend") && strangerPage.text.contains("data-cost-micros=\"0\""))
        }
    }
}
