"""What the browser tests share: signing up and in, filling a provider's form, finding a card."""
import itertools
import json
import pathlib
import re
import uuid

from playwright.sync_api import expect

PASSWORD = "a-long-passphrase-for-e2e-tests"
SPANISH = ["Nueva Integración", "Guardar y Verificar", "Probar Conexión", "Conectado", "Verificando", "Error", "Deshabilitado"]
ENGLISH = ["New integration", "Save and verify", "Test connection", "Connected", "Verifying", "Error", "Disabled"]
BAD_OPENAI_KEY = "sk-fake-bad-openai-key-000000001"
counter = itertools.count()


def sign_up(page, language="es"):
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.test"
    page.goto("/signup")
    page.get_by_label("Correo electrónico" if language == "es" else "Email").fill(email)
    page.get_by_label("Contraseña" if language == "es" else "Password").fill(PASSWORD)
    page.get_by_role("button", name="Crear cuenta" if language == "es" else "Create account").click()
    expect(page).to_have_url(re.compile(r"/integrations$"))
    return email


def sign_in_as_new_user(page, server):
    """An account made by the operator (sign-up through the page is limited per address), signed in on `page`."""
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.test"
    server.create_user(email, PASSWORD)
    page.goto("/login")
    # Found by id, so that it works in either language.
    page.locator("#email").fill(email)
    page.locator("#password").fill(PASSWORD)
    page.locator('form[action="/login"] button[type="submit"]').click()
    expect(page).to_have_url(re.compile(r"/integrations$"))
    return email


def fill_provider(page, kind, credentials, secret=None):
    """Fills the provider's credential fields; `secret` overrides the key-based providers' key."""
    if kind in ("openai", "anthropic", "gemini"):
        page.get_by_label("Clave de API").fill(secret or credentials[kind])
    elif kind == "aws":
        page.get_by_label("ID de clave de acceso").fill(credentials["aws_access_key_id"])
        page.get_by_label("Clave de acceso secreta").fill(secret or credentials["aws_secret_access_key"])
    elif kind == "azure":
        page.get_by_label("ID de inquilino (tenant)").fill(credentials["azure_tenant_id"])
        page.get_by_label("ID de cliente (aplicación)").fill(credentials["azure_client_id"])
        page.get_by_label("Secreto de cliente").fill(secret or credentials["azure_client_secret"])
    elif kind == "google_cloud":
        # The file upload, as a user would pick the downloaded key file.
        page.get_by_label("Archivo JSON de la cuenta de servicio").set_input_files(
            files=[{"name": "key.json", "mimeType": "application/json", "buffer": credentials["google_cloud"].encode()}])


LABELS = {"openai": "OpenAI", "google_cloud": "Google Cloud", "aws": "AWS", "azure": "Azure", "anthropic": "Anthropic", "gemini": "Gemini"}


def create(page, kind, credentials, name=None, secret=None):
    name = name or f"{LABELS[kind]} {next(counter)}"
    page.goto("/integrations")
    page.get_by_role("link", name="Nueva Integración").first.click()
    page.locator(f'a[href="/integrations/new?type={kind}"]').click()
    page.get_by_label("Nombre").fill(name)
    fill_provider(page, kind, credentials, secret)
    page.get_by_role("button", name="Guardar y Verificar").click()
    return name


def card(page, name):
    return page.locator("article.integration").filter(has=page.get_by_role("heading", name=name, exact=True))


def assert_no_secret(page, secrets):
    html = page.content()
    for secret in secrets:
        assert secret not in html, "a submitted secret is in the page"
    for url, body in page.recorder.bodies():
        for secret in secrets:
            assert secret not in body, f"a submitted secret came back in {url}"


def create_in(page, kind, credentials, secret=None, wait=True):
    """Creates through the form in whatever language the page is in (fields are found by name)."""
    name = f"{LABELS[kind]} {next(counter)}"
    page.goto(f"/integrations/new?type={kind}")
    page.locator("#name").fill(name)
    if kind in ("openai", "anthropic", "gemini"):
        page.locator("#api_key").fill(secret or credentials[kind])
    elif kind == "azure":
        page.locator("#tenant_id").fill(credentials["azure_tenant_id"])
        page.locator("#client_id").fill(credentials["azure_client_id"])
        page.locator("#client_secret").fill(credentials["azure_client_secret"])
    page.locator('form[action="/integrations"] button[type="submit"]').click()
    expect(page).to_have_url(re.compile(r"/integrations\?done=created$"))
    return name


def overflowing(page):
    """The elements that reach past the right edge of the window (what makes a page scroll sideways)."""
    return page.evaluate("""Array.from(document.querySelectorAll('body *'))
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.table-wrap'))
        .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)""")


def unlabelled(page):
    return page.evaluate("""Array.from(document.querySelectorAll('input:not([type=hidden]), textarea, select'))
        .filter(i => !(i.labels && i.labels.length)).map(i => i.name || i.id)""")


LOCALIZATION = pathlib.Path(__file__).resolve().parent.parent / "Sources" / "KeyhavenPages" / "Resources" / "Localization"


def english_sentences():
    """The English interface texts a Spanish page must never show: the values of the `en` file, cut at their
    placeholders, that are longer than two words and are not the Spanish value too."""
    spanish = json.loads((LOCALIZATION / "es.json").read_text())
    english = json.loads((LOCALIZATION / "en.json").read_text())
    sentences = set()
    for key, value in english.items():
        if value == spanish.get(key):
            continue
        for part in re.split(r"\{[a-z_]+\}", value):
            part = part.strip(" :;,.()«»“”")
            if len(part.split()) > 2 and part not in spanish.get(key, ""):
                sentences.add(part)
    return sorted(sentences)


def assert_page_is_complete(page, language, english, where):
    """No optional printed as such anywhere in the page, and on a Spanish page no English sentence in what the reader
    sees (a provider's own words, folded away under "Texto original", are not seen until opened)."""
    html = page.content()
    visible = page.locator("body").inner_text()
    assert "Optional(" not in html, f"{where}: an optional was printed"
    assert not re.search(r"\bnil\b", visible), f"{where}: 'nil' is on the page"
    if language == "es":
        found = [sentence for sentence in english if sentence in visible]
        assert found == [], f"{where}: English on a Spanish page: {found}"


def assert_header_on_one_row(page, where):
    """The account's name and the sign-out button sit on the brand's row: the header is one row."""
    who = page.locator("header .who").bounding_box()
    button = page.locator("header form.signout button").bounding_box()
    brand = page.locator("header .brand").bounding_box()
    assert who and button and brand, f"{where}: the header's account is not shown"

    def middle(box):
        return box["y"] + box["height"] / 2

    assert abs(middle(who) - middle(button)) <= 4, f"{where}: the account name and 'sign out' are on different rows"
    assert abs(middle(brand) - middle(button)) <= 8, f"{where}: the account is on a row below the brand"
    share_a_top = abs(who["y"] - button["y"]) < button["height"]
    assert share_a_top, f"{where}: the account name and 'sign out' do not share a top"
