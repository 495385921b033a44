"""The seed's integrations page, driven in a real browser against the real server and checking fake providers."""
import re

from playwright.sync_api import expect

from conftest import DESKTOP, PHONE, new_page, screenshot
from helpers import (BAD_OPENAI_KEY, ENGLISH, LABELS, PASSWORD, SPANISH, assert_header_on_one_row, assert_no_secret,
                     assert_page_is_complete, card, create, create_in, english_sentences, fill_provider, overflowing,
                     sign_in_as_new_user, sign_up, unlabelled)

def test_each_provider_is_created_through_the_form_and_turns_connected_without_a_reload(page, server, fakes):
    credentials = fakes["credentials"]
    sign_up(page)
    for kind in LABELS:
        name = create(page, kind, credentials)
        expect(page).to_have_url(re.compile(r"/integrations\?done=created$"))
        # The list as the server rendered it right after saving: this card is being verified.
        first = card(page, name)
        expect(first.locator(".badge")).to_have_text("Verificando")
        page.evaluate("window.__notReloaded = true")
        expect(card(page, name).locator(".badge")).to_have_text("Conectado", timeout=20000)
        assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
        assert_no_secret(page, server.secrets)
    expect(page.locator("article.integration")).to_have_count(6)
    expect(page.get_by_text("Cifrado en reposo").first).to_be_visible()
    for viewport, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(viewport)
        page.goto("/integrations")
        screenshot(page, f"list-{suffix}")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"the list scrolls sideways at {suffix} width"


def test_a_bad_key_shows_the_error_and_replacing_it_connects(page, server, fakes):
    credentials = fakes["credentials"]
    sign_up(page)
    name = create(page, "openai", credentials, secret=BAD_OPENAI_KEY)
    expect(card(page, name).locator(".badge")).to_have_text("Error", timeout=20000)
    expect(card(page, name).locator(".integration-error")).to_contain_text("El proveedor rechazó las credenciales.")
    assert_no_secret(page, server.secrets + [BAD_OPENAI_KEY])
    card(page, name).get_by_role("link", name=re.compile("^Detalles")).click()
    page.get_by_label("Clave de API").fill(credentials["openai"])
    page.get_by_role("button", name="Reemplazar y Verificar").click()
    expect(page.locator("#detail-status")).to_have_text("Conectado", timeout=20000)
    expect(page.locator(".versions li")).to_have_count(2)
    assert_no_secret(page, server.secrets + [BAD_OPENAI_KEY])
    for viewport, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(viewport)
        screenshot(page, f"detail-{suffix}")


def test_a_form_with_errors_keeps_what_was_typed_but_never_a_secret(page, server, fakes):
    credentials = fakes["credentials"]
    sign_up(page)
    page.goto("/integrations/new?type=aws")
    page.get_by_label("Nombre").fill("Producción")
    page.get_by_label("ID de clave de acceso").fill(credentials["aws_access_key_id"])
    page.get_by_label("Clave de acceso secreta").fill(credentials["aws_secret_access_key"])
    page.get_by_label("Región (opcional)").fill("us-east-1\n")
    page.get_by_label("Región (opcional)").fill("nowhere")
    page.get_by_role("button", name="Guardar y Verificar").click()
    expect(page.locator("#region-error")).to_have_text("debe ser una región de AWS como us-east-1")
    expect(page.get_by_label("Nombre")).to_have_value("Producción")
    expect(page.get_by_label("ID de clave de acceso")).to_have_value(credentials["aws_access_key_id"])
    expect(page.get_by_label("Clave de acceso secreta")).to_have_value("")
    assert_no_secret(page, [credentials["aws_secret_access_key"]])
    for viewport, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(viewport)
        screenshot(page, f"form-errors-{suffix}")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.goto("/integrations")
    expect(page.locator("article.integration")).to_have_count(0)


def test_test_disable_enable_and_delete_with_confirmation_then_the_audit_page_lists_them(page, server, fakes):
    credentials = fakes["credentials"]
    sign_up(page)
    name = create(page, "anthropic", credentials)
    expect(card(page, name).locator(".badge")).to_have_text("Conectado", timeout=20000)
    card(page, name).get_by_role("button", name="Probar Conexión").click()
    expect(page.locator(".result")).to_contain_text("Conectado")
    expect(page.locator(".result")).to_contain_text("ms")
    page.get_by_role("button", name="Deshabilitar").click()
    expect(page.locator("#detail-status")).to_have_text("Deshabilitado")
    page.get_by_role("button", name="Habilitar").click()
    expect(page.locator("#detail-status")).to_have_text("Conectado", timeout=20000)
    page.get_by_role("link", name="Eliminar").click()
    page.get_by_label(re.compile("Escribe el nombre")).fill("not the name")
    page.get_by_role("button", name="Eliminar definitivamente").click()
    expect(page.get_by_role("alert")).to_have_text("El nombre no coincide; no se ha eliminado nada.")
    page.get_by_label(re.compile("Escribe el nombre")).fill(name)
    page.get_by_role("button", name="Eliminar definitivamente").click()
    expect(page).to_have_url(re.compile(r"/integrations\?done=deleted$"))
    expect(card(page, name)).to_have_count(0)
    page.get_by_role("link", name="Auditoría").click()
    events = page.locator("table.events tbody")
    for label in ["Integración creada", "Conexión probada", "Integración deshabilitada", "Integración habilitada", "Integración eliminada", "Verificación automática"]:
        expect(events).to_contain_text(label)
    screenshot(page, "audit-desktop")


def test_every_seed_label_in_spanish_and_the_english_ones_in_english(browser, server, fakes):
    credentials = fakes["credentials"]
    for language, labels in (("es", SPANISH), ("en", ENGLISH)):
        page = new_page(browser, server, language=language)
        sign_up(page, language)
        # One integration in each state: connected, error, disabled, and one just saved (being verified).
        connected = create_in(page, "gemini", credentials)
        failing = create_in(page, "openai", credentials, secret=BAD_OPENAI_KEY)
        disabled = create_in(page, "anthropic", credentials)
        expect(card(page, disabled).locator(".badge")).not_to_have_text(re.compile("Verificando|Verifying"), timeout=20000)
        expect(card(page, failing).locator(".badge")).not_to_have_text(re.compile("Verificando|Verifying"), timeout=20000)
        expect(card(page, connected).locator(".badge")).not_to_have_text(re.compile("Verificando|Verifying"), timeout=20000)
        card(page, disabled).locator("a", has_text=re.compile("Detalles|Details")).click()
        page.locator('form[action$="/disable"] button').click()
        page.goto("/integrations/new?type=azure")
        expect(page.get_by_role("button", name=labels[1])).to_be_visible()
        page.goto("/integrations")
        create_in(page, "azure", credentials, wait=False)
        body = page.locator("body")
        for label in [labels[0], labels[2], labels[3], labels[4], labels[5], labels[6]]:
            expect(body).to_contain_text(label)
        page.context.close()


def test_the_language_switch_is_remembered(page, server):
    page.goto("/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Inicia sesión en Keyhaven")
    # The switch is a form with the page's token (signed out: the one bound to the form cookie).
    expect(page.locator('form[action="/language"] input[name="form_token"]')).to_have_count(1)
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Keyhaven")
    page.goto("/signup")
    expect(page.get_by_role("heading", level=1)).to_have_text("Create your account")


def test_the_language_switch_works_signed_in_and_needs_its_token(page, server):
    sign_in_as_new_user(page, server)
    page.goto("/integrations")
    # Signed in, the switch carries the session's CSRF token, like every other form.
    expect(page.locator('form[action="/language"] input[name="csrf_token"]')).to_have_count(1)
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("link", name="New integration").first).to_be_visible()
    page.get_by_role("button", name="Español").click()
    expect(page.get_by_role("link", name="Nueva Integración").first).to_be_visible()
    # Posted from elsewhere, without the token, it is refused and changes nothing.
    refused = page.request.post(f"{server.url}/language", form={"lang": "en", "next": "/integrations"}, max_redirects=0)
    assert refused.status == 403
    page.goto("/integrations")
    expect(page.get_by_role("link", name="Nueva Integración").first).to_be_visible()


def test_the_create_flow_works_with_the_keyboard_alone(page, server, fakes):
    credentials = fakes["credentials"]
    sign_up(page)

    def tab_to(text):
        for _ in range(60):
            page.keyboard.press("Tab")
            if text in page.evaluate("document.activeElement ? document.activeElement.textContent + (document.activeElement.id || '') : ''"):
                return
        raise AssertionError(f"could not reach {text!r} with Tab")

    tab_to("Nueva Integración")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/integrations/new$"))
    tab_to("OpenAI")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"type=openai$"))
    # The name field has the focus when the form opens.
    page.keyboard.type("Teclado")
    page.keyboard.press("Tab")
    page.keyboard.type(credentials["openai"])
    tab_to("Guardar y Verificar")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"done=created$"))
    expect(card(page, "Teclado").locator(".badge")).to_have_text("Conectado", timeout=20000)


def test_forms_without_their_csrf_token_are_refused(page, server, fakes):
    sign_up(page)
    response = page.request.post("/integrations", multipart={"type": "openai", "name": "forged", "api_key": fakes["credentials"]["openai"]})
    assert response.status == 403
    response = page.request.post("/integrations", multipart={"type": "openai", "name": "forged", "api_key": fakes["credentials"]["openai"], "csrf_token": "wrong"})
    assert response.status == 403
    page.goto("/integrations")
    expect(page.locator("article.integration")).to_have_count(0)
    # The sign-in form needs the token bound to its cookie.
    other = new_page(page.context.browser, server)
    response = other.request.post("/login", form={"email": "x@example.test", "password": PASSWORD})
    assert response.status == 403
    other.context.close()


def test_pages_carry_the_security_headers_and_no_inline_script_or_style(page, server):
    response = page.goto("/login")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    html = page.content()
    assert "<style" not in html and " style=" not in html and "onclick" not in html
    assert all(script.get_attribute("src") for script in page.locator("script").all())
    assert unlabelled(page) == []
    response = page.goto("/no-such-page")
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("No encontrado")


def test_every_field_of_every_page_has_a_label_and_fits_a_phone(page, server, fakes):
    sign_up(page)
    name = create(page, "openai", fakes["credentials"])
    card(page, name).get_by_role("link", name=re.compile("^Detalles")).click()
    detail = page.url
    page.goto("/orgs")
    page.get_by_label("Nombre").fill("Equipo")
    page.get_by_role("button", name="Crear organización").click()
    organization = re.search(r"/orgs/[0-9a-f-]{36}", page.url).group(0)
    paths = ["/integrations", "/integrations/new", "/audit", "/tokens", "/usage", detail, detail + "/delete"]
    paths += ["/orgs", organization, "/invitations/accept", "/integrations?workspace=" + organization.split("/")[-1]]
    paths += [f"/integrations/new?type={kind}" for kind in list(LABELS) + ["azure_openai", "vertex_ai", "openai_compatible", "mistral"]]
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        for path in paths:
            page.goto(path)
            assert unlabelled(page) == [], path
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"{path} scrolls sideways at {viewport['width']} px"


def test_a_viewer_sees_the_shared_integration_without_edit_controls_and_once_promoted_can_test_it(browser, server, fakes):
    credentials = fakes["credentials"]
    owner = new_page(browser, server)
    invitee = new_page(browser, server)
    try:
        sign_in_as_new_user(owner, server)
        invitee_email = sign_in_as_new_user(invitee, server)
        # The owner creates an organization from its page and invites the other user as a viewer.
        owner.goto("/orgs")
        owner.get_by_label("Nombre").fill("Equipo E2E")
        owner.get_by_role("button", name="Crear organización").click()
        expect(owner.get_by_role("heading", level=1)).to_have_text("Equipo E2E")
        org_path = re.search(r"/orgs/[0-9a-f-]{36}", owner.url).group(0)
        org_id = org_path.split("/")[-1]
        owner.get_by_label("Correo electrónico").fill(invitee_email)
        owner.locator("#invite-role").select_option("viewer")
        owner.get_by_role("button", name="Crear invitación").click()
        link = owner.locator("#invitation-link").input_value()
        assert re.fullmatch(re.escape(server.url) + r"/invitations/accept#kh_inv_[A-Za-z0-9_-]{43}", link), "not an invitation link"
        screenshot(owner, "organization-invited")

        # An integration in the organization, made from its own list (the switcher leads there).
        owner.locator("details.switcher summary").click()
        owner.locator("details.switcher").get_by_role("link", name=re.compile("^Equipo E2E")).click()
        expect(owner).to_have_url(re.compile(rf"/integrations\?workspace={org_id}$"))
        owner.get_by_role("link", name="Nueva Integración").first.click()
        owner.locator('a[href^="/integrations/new?type=openai&workspace="]').click()
        owner.get_by_label("Nombre").fill("Clave compartida")
        fill_provider(owner, "openai", credentials)
        owner.get_by_role("button", name="Guardar y Verificar").click()
        expect(owner).to_have_url(re.compile(rf"workspace={org_id}&done=created$"))
        expect(card(owner, "Clave compartida").locator(".badge")).to_have_text("Conectado", timeout=20000)

        # The invitee opens the link: the token comes from its fragment, and the server never sees it in a URL.
        invitee.goto(link)
        expect(invitee.locator("#invitation-token")).to_have_value(re.compile(r"^kh_inv_"))
        assert "#" not in invitee.url
        invitee.get_by_role("button", name="Aceptar la invitación").click()
        expect(invitee).to_have_url(re.compile(rf"workspace={org_id}&done=joined$"))
        shared = card(invitee, "Clave compartida")
        expect(shared.locator(".badge")).to_have_text("Conectado")
        expect(shared.get_by_role("button", name="Probar Conexión")).to_have_count(0)
        expect(invitee.get_by_role("link", name="Nueva Integración")).to_have_count(0)
        shared.get_by_role("link", name=re.compile("^Detalles")).click()
        integration_id = re.search(r"/integrations/([0-9a-f-]{36})", invitee.url).group(1)
        expect(invitee.get_by_role("button", name="Probar Conexión")).to_have_count(0)
        expect(invitee.get_by_role("button", name="Reemplazar y Verificar")).to_have_count(0)
        expect(invitee.locator(f'a[href="/integrations/{integration_id}/delete"]')).to_have_count(0)
        expect(invitee.locator("form[action^='/integrations/']")).to_have_count(0)
        screenshot(invitee, "viewer-detail")
        # The server refuses what the page does not offer.
        csrf = invitee.locator('form[action="/logout"] input[name="csrf_token"]').input_value()
        assert invitee.request.post(f"/integrations/{integration_id}/test", form={"csrf_token": csrf}).status == 403
        assert invitee.request.post(f"/integrations/{integration_id}/disable", form={"csrf_token": csrf}).status == 403

        # Promoted to member from the organization page, the invitee can test it.
        owner.goto(org_path)
        row = owner.locator(f'tr[data-member="{invitee_email}"]')
        row.locator("select").select_option("member")
        row.get_by_role("button", name=re.compile("^Guardar")).click()
        expect(owner.locator(".alert-success")).to_have_text("Rol cambiado.")
        invitee.reload()
        invitee.get_by_role("button", name="Probar Conexión").click()
        expect(invitee.locator(".result .badge")).to_have_text("Conectado", timeout=20000)
        for viewer in (owner, invitee):
            assert_no_secret(viewer, server.secrets)
        for viewport, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
            owner.set_viewport_size(viewport)
            owner.goto(org_path)
            screenshot(owner, f"organization-{suffix}")
            assert unlabelled(owner) == []
            assert owner.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"the organization page scrolls sideways at {suffix} width: {overflowing(owner)}"
    finally:
        owner.context.close()
        invitee.context.close()


def test_the_usage_page_charts_reported_usage_and_its_numbers_are_the_apis_in_both_languages(page, server, fakes):
    import json
    import subprocess
    import urllib.request

    from conftest import BIN

    sign_in_as_new_user(page, server)
    name = create(page, "openai", fakes["credentials"])
    integrations = page.request.get("/api/integrations").json()["integrations"]
    integration = next(item["id"] for item in integrations if item["name"] == name)
    made = subprocess.run([str(BIN / "keyhaven"), "tokens", "create-service", "--name", "e2e usage", "--scope", "usage:report"],
                          env=server.environment, cwd=server.workdir, check=True, capture_output=True, text=True, timeout=60)
    token = made.stdout.strip().splitlines()[-1]
    for index, model in enumerate(["gpt-4o", "gpt-4o-mini", "house-model-7"]):
        report = {"model": model, "input_tokens": 1200 * (index + 1), "output_tokens": 300, "idempotency_key": f"e2e-{index}"}
        request = urllib.request.Request(f"{server.url}/api/integrations/{integration}/usage", data=json.dumps(report).encode(),
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
    summary = page.request.get("/api/usage?group_by=model").json()
    models = {row["model"]: row for row in summary["rows"]}

    for language, heading, no_price in (("es", "Uso y costos", "sin precio"), ("en", "Usage and cost", "no price")):
        page.context.add_cookies([{"name": "keyhaven_lang", "value": language, "url": server.url}])
        page.goto("/usage")
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        expect(page.locator("svg.chart").first).to_be_visible()
        assert page.locator("svg.chart rect").count() >= 2  # cost and tokens bars of today
        total = page.locator('[data-total="cost"]')
        assert int(total.get_attribute("data-cost-micros")) == summary["total"]["cost_micros"]
        assert page.locator('[data-total="requests"]').inner_text() == str(summary["total"]["requests"])
        for model, row in models.items():
            cells = page.locator(f'tr[data-model="{model}"] td')
            assert int(cells.nth(3).get_attribute("data-cost-micros")) == row["cost_micros"]
        expect(page.locator('tr[data-model="house-model-7"] td').nth(3)).to_have_text(no_price)
        screenshot(page, f"usage-{language}")
    page.context.add_cookies([{"name": "keyhaven_lang", "value": "es", "url": server.url}])


def test_every_page_in_both_languages_is_complete_translated_and_fits(browser, server, fakes):
    """Every page, signed out and in, with a verified integration and one in error, in Spanish and English: a
    full-page screenshot of each in .build/e2e/, no optional printed, no English sentence on a Spanish page, and the
    header on one row at 1280 px."""
    credentials = fakes["credentials"]
    english = english_sentences()
    assert len(english) > 100, "the English texts were read"
    for language in ("es", "en"):
        page = new_page(browser, server, language=language)

        def visit(path, name, status=200):
            response = page.goto(path)
            assert response.status == status, f"{path}: {response.status}"
            check(name)

        def check(name):
            assert_page_is_complete(page, language, english, f"{language} {name}")
            if page.locator("header .who").count():
                assert_header_on_one_row(page, f"{language} {name}")
            screenshot(page, f"page-{language}-{name}")

        visit("/login", "login")
        visit("/signup", "signup")
        visit("/invitations/accept", "accept-signed-out")
        visit("/no-such-page", "not-found-signed-out", status=404)
        sign_in_as_new_user(page, server)
        connected = create_in(page, "gemini", credentials)
        failing = create_in(page, "openai", credentials, secret=BAD_OPENAI_KEY)
        for name in (connected, failing):
            badge = card(page, name).locator(".badge")
            expect(badge).not_to_have_text(re.compile("Verificando|Verifying"), timeout=20000)
        expect(card(page, failing).locator(".badge")).to_have_text("Error")
        visit("/integrations", "integrations")
        card(page, connected).locator("a.button-quiet").click()
        detail = page.url
        check("detail-connected")
        page.goto("/integrations")
        card(page, failing).locator("a.button-quiet").click()
        check("detail-error")
        page.locator('form[action$="/test"] button').first.click()
        expect(page.locator(".result")).to_be_visible()
        check("detail-test-result")
        visit(detail + "/delete", "delete")
        visit("/integrations/new", "new")
        for kind in LABELS:
            visit(f"/integrations/new?type={kind}", f"new-{kind}")
        # A refused form: its problems are shown next to the fields, in the page's language.
        page.goto("/integrations/new?type=aws")
        page.locator("#name").fill("Región inválida")
        page.locator("#access_key_id").fill("AKIA-not-a-key")
        page.locator("#region").fill("nowhere")
        page.locator('form[action="/integrations"] button[type="submit"]').click()
        expect(page.locator("#region-error")).to_be_visible()
        check("new-aws-refused")
        page.goto("/orgs")
        page.locator("#org-name").fill("Equipo")
        page.locator('form[action="/orgs"] button[type="submit"]').click()
        expect(page).to_have_url(re.compile(r"/orgs/[0-9a-f-]{36}\?done=created$"))
        check("organization")
        visit("/orgs", "organizations")
        visit("/usage", "usage")
        visit("/tokens", "tokens")
        page.locator('form[action="/tokens"] button[type="submit"]').click()
        expect(page.locator(".field-error").first).to_be_visible()
        check("tokens-refused")
        visit("/audit", "audit")
        visit("/invitations/accept", "accept")
        visit("/no-such-page", "not-found", status=404)
        visit("/integrations/00000000-0000-7000-8000-000000000000", "integration-not-found", status=404)
        page.context.close()


def test_a_catalog_provider_is_found_by_search_and_created_through_the_form(page, server, fakes):
    credentials = fakes["credentials"]
    sign_up(page)
    page.goto("/integrations/new")
    expect(page.get_by_role("heading", name="Modelos de IA")).to_be_visible()
    expect(page.get_by_role("heading", name="Nube")).to_be_visible()
    mistral = page.locator('a[href="/integrations/new?type=mistral"]')
    openai = page.locator('a[href="/integrations/new?type=openai"]')
    expect(mistral).to_contain_text("Clave de API de Mistral AI")
    page.get_by_label("Buscar proveedores").fill("mist")
    expect(mistral).to_be_visible()
    expect(openai).to_be_hidden()
    expect(page.get_by_role("heading", name="Nube")).to_be_hidden()
    page.get_by_label("Buscar proveedores").fill("nothing like it")
    expect(page.get_by_text("Ningún proveedor coincide.")).to_be_visible()
    page.get_by_label("Buscar proveedores").fill("Mistral")
    mistral.click()
    page.get_by_label("Nombre").fill("Mistral prod")
    page.get_by_label("Clave de API").fill(credentials["mistral"])
    page.get_by_role("button", name="Guardar y Verificar").click()
    expect(page).to_have_url(re.compile(r"/integrations\?done=created$"))
    expect(card(page, "Mistral prod").locator(".badge")).to_have_text("Conectado", timeout=20000)
    assert_no_secret(page, server.secrets)
