import Foundation
import KeyhavenCore

/// The languages of the web interface (SPEC §9): Spanish, the seed's, and English.
public enum Language: String, Sendable, CaseIterable {
    case es
    case en

    /// The name of the cookie that remembers a chosen language.
    static let cookieName = "keyhaven_lang"

    /// The language for a request: the remembered choice, else the first supported language of
    /// `Accept-Language` by preference, else Spanish.
    static func negotiate(cookie: String?, acceptLanguage: String?) -> Language {
        if let cookie, let chosen = Language(rawValue: cookie) { return chosen }
        guard let header = acceptLanguage?.prefix(512) else { return .es }
        var best: (language: Language, quality: Double)?
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";")
            let tag = (parts.first ?? "").trimmingCharacters(in: .whitespaces).lowercased()
            let primary = String(tag.split(separator: "-").first ?? "")
            guard let language = Language(rawValue: primary) else { continue }
            var quality = 1.0
            for parameter in parts.dropFirst() {
                let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if pair.count == 2, pair[0] == "q", let value = Double(pair[1]), value.isFinite { quality = value }
            }
            if quality > 0, quality > (best?.quality ?? -1) { best = (language, quality) }
        }
        return best?.language ?? .es
    }

    /// The interface texts, by key.
    var texts: [String: String] { self == .es ? Texts.spanish : Texts.english }

    /// One interface text.
    func text(_ key: String) -> String { texts[key] ?? key }

    /// The label of a status, as the seed writes it in Spanish.
    func label(_ status: IntegrationStatus) -> String {
        switch status {
        case .connected: text("status_connected")
        case .verifying: text("status_verifying")
        case .error: text("status_error")
        case .disabled: text("status_disabled")
        }
    }

    /// "hace 5 minutos" / "5 minutes ago"; a date beyond a month is shown as the day.
    func relative(_ date: Date, now: Date = Date()) -> String {
        let seconds = max(0, now.timeIntervalSince(date))
        func count(_ value: Int, _ one: String, _ many: String) -> String {
            let unit = value == 1 ? one : many
            return self == .es ? "hace \(value) \(unit)" : "\(value) \(unit) ago"
        }
        let spanish = self == .es
        switch seconds {
        case ..<45: return spanish ? "hace un momento" : "just now"
        case ..<5400: return count(max(1, Int((seconds / 60).rounded())), spanish ? "minuto" : "minute", spanish ? "minutos" : "minutes")
        case ..<129_600: return count(Int((seconds / 3600).rounded()), spanish ? "hora" : "hour", spanish ? "horas" : "hours")
        case ..<2_592_000: return count(Int((seconds / 86400).rounded()), spanish ? "día" : "day", spanish ? "días" : "days")
        default: return date.formatted(Date.ISO8601FormatStyle().year().month().day())
        }
    }

    /// What an audit action means, in words.
    func action(_ action: String) -> String {
        let labels: [String: (es: String, en: String)] = [
            "auth.signup": ("Cuenta creada", "Account created"),
            "auth.login": ("Inicio de sesión", "Signed in"),
            "auth.logout": ("Cierre de sesión", "Signed out"),
            "token.create": ("Token creado", "Token created"),
            "token.revoke": ("Token revocado", "Token revoked"),
            "integration.create": ("Integración creada", "Integration created"),
            "integration.update": ("Integración modificada", "Integration changed"),
            "integration.credentials.rotate": ("Credenciales reemplazadas", "Credentials replaced"),
            "integration.enable": ("Integración habilitada", "Integration enabled"),
            "integration.disable": ("Integración deshabilitada", "Integration disabled"),
            "integration.delete": ("Integración eliminada", "Integration deleted"),
            "integration.test": ("Conexión probada", "Connection tested"),
            "integration.verify": ("Verificación automática", "Automatic verification"),
            "credentials.read": ("Credenciales leídas por el backend", "Credentials read by the backend"),
            "key.rotate": ("Clave maestra rotada", "Master key rotated"),
            "key.retire": ("Clave maestra retirada", "Master key retired"),
        ]
        guard let label = labels[action] else { return action }
        return self == .es ? label.es : label.en
    }

    /// A validation problem in this language; the English text of the validators where no translation exists.
    func problem(_ message: String) -> String {
        guard self == .es else { return message }
        if let exact = Texts.spanishProblems[message] { return exact }
        if message.hasPrefix("must be at least ") { return message.replacingOccurrences(of: "must be at least", with: "debe tener al menos").replacingOccurrences(of: "characters", with: "caracteres") }
        if message.hasPrefix("must be at most ") { return message.replacingOccurrences(of: "must be at most", with: "debe tener como máximo").replacingOccurrences(of: "characters", with: "caracteres") }
        if message.hasPrefix("must be an API key like ") {
            let example = message.dropFirst("must be an API key like ".count).prefix { $0 != " " }
            return "debe ser una clave de API como \(example) (letras, dígitos, - y _)"
        }
        if message.hasPrefix("must be one of ") { return "debe ser uno de " + message.dropFirst("must be one of ".count) }
        return message
    }
}

/// The interface texts. Every label of the seed is here in Spanish exactly as the seed writes it.
enum Texts {
    static let spanish: [String: String] = [
        "lang": "es",
        "rotation_title": "Rotación de credenciales",
        "rotation_lead": "Automática para AWS, Google Cloud y Azure: se crea una credencial nueva, se verifica y se usa; la anterior se retira tras el periodo de gracia. Para las demás, un recordatorio.",
        "rotation_mode": "Modo",
        "mode_off": "Desactivada",
        "mode_remind": "Recordatorio",
        "mode_automatic": "Automática",
        "every_days": "Cada (días)",
        "grace_hours": "Periodo de gracia (horas)",
        "rotate_now": "Rotar ahora",
        "rotation_due": "Rotación pendiente",
        "rotation_history": "Rotaciones recientes",
        "rotation_running": "Hay una rotación en curso.",
        "rotation_saved_flash": "Política de rotación guardada.",
        "rotation_started_flash": "Rotación iniciada; avanzará sola.",
        "rotation_requested": "solicitada",
        "rotation_creating": "creando la credencial",
        "rotation_stored": "credencial nueva guardada",
        "rotation_current": "credencial nueva en uso",
        "rotation_deactivated": "anterior desactivada",
        "rotation_done": "completada",
        "rotation_failed": "fallida",
        "outcome_success": "correcto",
        "outcome_failure": "fallido",
        "outcome_denied": "denegado",
        "actor_user": "usuario",
        "actor_service": "servicio",
        "actor_system": "sistema",
        "actor_operator": "operador",
        "app_tagline": "Bóveda de credenciales",
        "nav_integrations": "Integraciones",
        "nav_audit": "Auditoría",
        "nav_tokens": "Tokens personales",
        "nav_main": "Principal",
        "sign_out": "Cerrar sesión",
        "sign_in": "Iniciar sesión",
        "sign_in_title": "Inicia sesión en Keyhaven",
        "sign_up": "Crear cuenta",
        "sign_up_title": "Crea tu cuenta",
        "email": "Correo electrónico",
        "password": "Contraseña",
        "password_hint": "Al menos 12 caracteres; evita las contraseñas comunes.",
        "no_account": "¿No tienes cuenta?",
        "have_account": "¿Ya tienes cuenta?",
        "signup_closed": "El registro está cerrado en este servidor; pide una cuenta a quien lo administra.",
        "invalid_login": "El correo o la contraseña no son correctos.",
        "rate_limited": "Demasiados intentos. Espera un poco y vuelve a intentarlo.",
        "email_taken": "Ya existe una cuenta con ese correo.",
        "integrations_title": "Integraciones",
        "integrations_lead": "Credenciales de tus proveedores, cifradas en reposo y verificadas contra el proveedor.",
        "new_integration": "Nueva Integración",
        "empty_title": "Todavía no hay integraciones",
        "empty_body": "Guarda tu primera credencial de proveedor: se cifra en reposo y se verifica contra el proveedor real.",
        "status_connected": "Conectado",
        "status_verifying": "Verificando",
        "status_error": "Error",
        "status_disabled": "Deshabilitado",
        "encrypted_at_rest": "Cifrado en reposo",
        "test_connection": "Probar Conexión",
        "details": "Detalles",
        "last_verified": "Última verificación",
        "last_used": "Último uso",
        "never": "nunca",
        "credential": "Credencial",
        "choose_provider": "Elige el proveedor",
        "provider": "Proveedor",
        "name": "Nombre",
        "name_hint": "Para reconocerla, por ejemplo «OpenAI producción».",
        "save_and_verify": "Guardar y Verificar",
        "cancel": "Cancelar",
        "change_provider": "Cambiar de proveedor",
        "api_key": "Clave de API",
        "organization_optional": "Organización (opcional)",
        "project_optional": "Proyecto (opcional)",
        "service_account_file": "Archivo JSON de la cuenta de servicio",
        "service_account_paste": "O pega aquí el contenido del JSON",
        "access_key_id": "ID de clave de acceso",
        "secret_access_key": "Clave de acceso secreta",
        "session_token_optional": "Token de sesión (opcional)",
        "region_optional": "Región (opcional)",
        "tenant_id": "ID de inquilino (tenant)",
        "client_id": "ID de cliente (aplicación)",
        "client_secret": "Secreto de cliente",
        "secrets_not_shown": "Por seguridad, un secreto guardado nunca se vuelve a mostrar; escríbelo de nuevo para reemplazarlo.",
        "fix_errors": "Revisa los campos marcados.",
        "test_result": "Resultado de la prueba",
        "latency": "Latencia",
        "checked_at": "Comprobado",
        "replace_credentials": "Reemplazar credenciales",
        "replace_lead": "Se guarda como una versión nueva y se verifica; las anteriores se conservan cifradas.",
        "replace_and_verify": "Reemplazar y Verificar",
        "rename": "Cambiar nombre",
        "save": "Guardar",
        "disable": "Deshabilitar",
        "enable": "Habilitar",
        "delete": "Eliminar",
        "danger_zone": "Zona de peligro",
        "delete_title": "Eliminar la integración",
        "delete_warning": "Se destruirán todas las versiones de sus credenciales. No se puede deshacer.",
        "delete_confirm_label": "Escribe el nombre de la integración para confirmar",
        "delete_confirm_mismatch": "El nombre no coincide; no se ha eliminado nada.",
        "delete_confirm": "Eliminar definitivamente",
        "deleted": "La integración se ha eliminado y sus credenciales se han destruido.",
        "versions": "Versiones de las credenciales",
        "version": "Versión",
        "created": "Creada",
        "current": "actual",
        "activity": "Actividad de esta integración",
        "audit_title": "Registro de auditoría",
        "audit_lead": "Cada acción queda registrada en una cadena a prueba de manipulaciones.",
        "when": "Cuándo",
        "action": "Acción",
        "actor": "Actor",
        "outcome": "Resultado",
        "integration": "Integración",
        "no_events": "Todavía no hay eventos.",
        "older": "Eventos anteriores",
        "tokens_title": "Tokens de acceso personal",
        "tokens_lead": "Para scripts y herramientas que usan la API en tu nombre. Nunca pueden leer credenciales.",
        "token_name": "Nombre del token",
        "scopes": "Permisos",
        "scope_read": "Leer integraciones (integrations:read)",
        "scope_write": "Modificar integraciones (integrations:write)",
        "expires_in_days": "Caduca en (días, opcional)",
        "create_token": "Crear token",
        "token_created": "Copia el token ahora: no se volverá a mostrar.",
        "revoke": "Revocar",
        "revoked": "revocado",
        "expires": "Caduca",
        "no_tokens": "Todavía no tienes tokens personales.",
        "language": "Idioma",
        "error_title": "Algo salió mal",
        "error_body": "No se pudo completar la solicitud. Inténtalo de nuevo en un momento.",
        "not_found_title": "No encontrado",
        "not_found_body": "Esta página no existe o no tienes acceso a ella.",
        "forbidden_title": "Solicitud rechazada",
        "forbidden_body": "El formulario caducó o no es válido. Vuelve a la página e inténtalo otra vez.",
        "back_home": "Volver a Integraciones",
        "skip_to_content": "Saltar al contenido",
        "account": "Cuenta",
        "arn": "ARN",
        "models": "Modelos disponibles",
        "created_flash": "Integración guardada. La estamos verificando con el proveedor.",
        "replaced_flash": "Credenciales reemplazadas. Las estamos verificando con el proveedor.",
        "renamed_flash": "Nombre actualizado.",
        "enabled_flash": "Integración habilitada; se vuelve a verificar.",
        "disabled_flash": "Integración deshabilitada.",
        "revoked_flash": "Token revocado.",
        "status": "Estado",
        "type_openai": "OpenAI",
        "type_google_cloud": "Google Cloud",
        "type_aws": "AWS",
        "type_azure": "Azure",
        "type_anthropic": "Anthropic",
        "type_gemini": "Gemini",
        "desc_openai": "Clave de API de OpenAI",
        "desc_google_cloud": "Cuenta de servicio (archivo JSON)",
        "desc_aws": "Clave de acceso de IAM",
        "desc_azure": "Entidad de servicio (service principal)",
        "desc_anthropic": "Clave de API de Anthropic",
        "desc_gemini": "Clave de API de Gemini",
    ]

    static let english: [String: String] = [
        "lang": "en",
        "rotation_title": "Credential rotation",
        "rotation_lead": "Automatic for AWS, Google Cloud and Azure: a new credential is created, verified and put in use; the old one is retired after the grace period. For the others, a reminder.",
        "rotation_mode": "Mode",
        "mode_off": "Off",
        "mode_remind": "Reminder",
        "mode_automatic": "Automatic",
        "every_days": "Every (days)",
        "grace_hours": "Grace period (hours)",
        "rotate_now": "Rotate now",
        "rotation_due": "Rotation due",
        "rotation_history": "Recent rotations",
        "rotation_running": "A rotation is under way.",
        "rotation_saved_flash": "Rotation policy saved.",
        "rotation_started_flash": "Rotation started; it proceeds by itself.",
        "rotation_requested": "requested",
        "rotation_creating": "creating the credential",
        "rotation_stored": "new credential stored",
        "rotation_current": "new credential in use",
        "rotation_deactivated": "old one deactivated",
        "rotation_done": "done",
        "rotation_failed": "failed",
        "outcome_success": "success",
        "outcome_failure": "failure",
        "outcome_denied": "denied",
        "actor_user": "user",
        "actor_service": "service",
        "actor_system": "system",
        "actor_operator": "operator",
        "app_tagline": "Credential vault",
        "nav_integrations": "Integrations",
        "nav_audit": "Audit",
        "nav_tokens": "Personal tokens",
        "nav_main": "Main",
        "sign_out": "Sign out",
        "sign_in": "Sign in",
        "sign_in_title": "Sign in to Keyhaven",
        "sign_up": "Create account",
        "sign_up_title": "Create your account",
        "email": "Email",
        "password": "Password",
        "password_hint": "At least 12 characters; avoid common passwords.",
        "no_account": "No account yet?",
        "have_account": "Already have an account?",
        "signup_closed": "Sign-up is closed on this server; ask its administrator for an account.",
        "invalid_login": "The email or the password is not right.",
        "rate_limited": "Too many attempts. Wait a little and try again.",
        "email_taken": "An account with that email already exists.",
        "integrations_title": "Integrations",
        "integrations_lead": "Your providers' credentials, encrypted at rest and verified against the provider.",
        "new_integration": "New integration",
        "empty_title": "No integrations yet",
        "empty_body": "Save your first provider credential: it is encrypted at rest and verified against the real provider.",
        "status_connected": "Connected",
        "status_verifying": "Verifying",
        "status_error": "Error",
        "status_disabled": "Disabled",
        "encrypted_at_rest": "Encrypted at rest",
        "test_connection": "Test connection",
        "details": "Details",
        "last_verified": "Last verified",
        "last_used": "Last used",
        "never": "never",
        "credential": "Credential",
        "choose_provider": "Choose the provider",
        "provider": "Provider",
        "name": "Name",
        "name_hint": "To recognise it by, for example “OpenAI production”.",
        "save_and_verify": "Save and verify",
        "cancel": "Cancel",
        "change_provider": "Change provider",
        "api_key": "API key",
        "organization_optional": "Organization (optional)",
        "project_optional": "Project (optional)",
        "service_account_file": "Service account JSON file",
        "service_account_paste": "Or paste the JSON here",
        "access_key_id": "Access key ID",
        "secret_access_key": "Secret access key",
        "session_token_optional": "Session token (optional)",
        "region_optional": "Region (optional)",
        "tenant_id": "Tenant ID",
        "client_id": "Client (application) ID",
        "client_secret": "Client secret",
        "secrets_not_shown": "For your safety a saved secret is never shown again; type it again to replace it.",
        "fix_errors": "Check the fields marked below.",
        "test_result": "Test result",
        "latency": "Latency",
        "checked_at": "Checked",
        "replace_credentials": "Replace credentials",
        "replace_lead": "Saved as a new version and verified; earlier versions stay encrypted.",
        "replace_and_verify": "Replace and verify",
        "rename": "Rename",
        "save": "Save",
        "disable": "Disable",
        "enable": "Enable",
        "delete": "Delete",
        "danger_zone": "Danger zone",
        "delete_title": "Delete the integration",
        "delete_warning": "Every version of its credentials will be destroyed. This cannot be undone.",
        "delete_confirm_label": "Type the integration's name to confirm",
        "delete_confirm_mismatch": "The name does not match; nothing was deleted.",
        "delete_confirm": "Delete for good",
        "deleted": "The integration was deleted and its credentials destroyed.",
        "versions": "Credential versions",
        "version": "Version",
        "created": "Created",
        "current": "current",
        "activity": "This integration's activity",
        "audit_title": "Audit log",
        "audit_lead": "Every action is recorded in a tamper-evident chain.",
        "when": "When",
        "action": "Action",
        "actor": "Actor",
        "outcome": "Outcome",
        "integration": "Integration",
        "no_events": "No events yet.",
        "older": "Older events",
        "tokens_title": "Personal access tokens",
        "tokens_lead": "For scripts and tools that use the API as you. They can never read credentials.",
        "token_name": "Token name",
        "scopes": "Scopes",
        "scope_read": "Read integrations (integrations:read)",
        "scope_write": "Change integrations (integrations:write)",
        "expires_in_days": "Expires in (days, optional)",
        "create_token": "Create token",
        "token_created": "Copy the token now: it is not shown again.",
        "revoke": "Revoke",
        "revoked": "revoked",
        "expires": "Expires",
        "no_tokens": "You have no personal tokens yet.",
        "language": "Language",
        "error_title": "Something went wrong",
        "error_body": "The request could not be completed. Try again in a moment.",
        "not_found_title": "Not found",
        "not_found_body": "This page does not exist or you have no access to it.",
        "forbidden_title": "Request refused",
        "forbidden_body": "The form expired or is not valid. Go back to the page and try again.",
        "back_home": "Back to integrations",
        "skip_to_content": "Skip to content",
        "account": "Account",
        "arn": "ARN",
        "models": "Models available",
        "created_flash": "Integration saved. It is being verified with the provider.",
        "replaced_flash": "Credentials replaced. They are being verified with the provider.",
        "renamed_flash": "Name updated.",
        "enabled_flash": "Integration enabled; it is verified again.",
        "disabled_flash": "Integration disabled.",
        "revoked_flash": "Token revoked.",
        "status": "Status",
        "type_openai": "OpenAI",
        "type_google_cloud": "Google Cloud",
        "type_aws": "AWS",
        "type_azure": "Azure",
        "type_anthropic": "Anthropic",
        "type_gemini": "Gemini",
        "desc_openai": "OpenAI API key",
        "desc_google_cloud": "Service account (JSON key file)",
        "desc_aws": "IAM access key",
        "desc_azure": "Service principal",
        "desc_anthropic": "Anthropic API key",
        "desc_gemini": "Gemini API key",
    ]

    /// Spanish for the validators' messages.
    static let spanishProblems: [String: String] = [
        "is required": "es obligatorio",
        "must be an email address": "debe ser una dirección de correo",
        "must not contain control characters": "no puede contener caracteres de control",
        "is too common; choose another": "es demasiado común; elige otra",
        "is not a known field": "no es un campo conocido",
        "is required for temporary (ASIA…) keys": "es obligatorio para claves temporales (ASIA…)",
        "must be 20 characters starting with AKIA or ASIA": "debe tener 20 caracteres y empezar por AKIA o ASIA",
        "must be exactly 40 characters (letters, digits, + and /)": "debe tener exactamente 40 caracteres (letras, dígitos, + y /)",
        "must be the session token (letters, digits, +, / and =)": "debe ser el token de sesión (letras, dígitos, +, / y =)",
        "must be a GUID (the directory's tenant id)": "debe ser un GUID (el id del directorio o tenant)",
        "must be a GUID (the application's client id)": "debe ser un GUID (el id de cliente de la aplicación)",
        "must be the client secret's value (visible ASCII characters)": "debe ser el valor del secreto (caracteres ASCII visibles)",
        "must be a Gemini API key: AIza followed by 35 letters, digits, - or _":
            "debe ser una clave de API de Gemini: AIza seguido de 35 letras, dígitos, - o _",
        "must be the service account's JSON key file": "debe ser el archivo JSON de la clave de la cuenta de servicio",
        "has too many fields for a service account key": "tiene demasiados campos para una clave de cuenta de servicio",
        "has a field name that is not a service account key field": "tiene un campo que no es de una clave de cuenta de servicio",
        "must be text without line breaks or control characters": "debe ser texto sin saltos de línea ni caracteres de control",
        "must be the service account's email": "debe ser el correo de la cuenta de servicio",
        "must be a PEM private key (-----BEGIN PRIVATE KEY-----)": "debe ser una clave privada PEM (-----BEGIN PRIVATE KEY-----)",
        "must be the key's id (letters, digits, - and _)": "debe ser el id de la clave (letras, dígitos, - y _)",
        "must be an https:// URL": "debe ser una URL https://",
        "must be an organization id like org-…": "debe ser un id de organización como org-…",
        "must be a project id like proj_…": "debe ser un id de proyecto como proj_…",
        "must be an AWS region like us-east-1": "debe ser una región de AWS como us-east-1",
        "must be a non-empty string without NUL characters": "no puede estar vacía",
        "must be \"service_account\"": "debe ser \"service_account\"",
        "choose a file or paste the JSON, not both": "elige un archivo o pega el JSON, no ambos",
        "must be a whole number of days from 1 to 365": "debe ser un número entero de días entre 1 y 365",
        "choose at least one": "elige al menos uno",
        "automatic rotation is only possible for aws, google_cloud and azure; use remind": "la rotación automática solo es posible para aws, google_cloud y azure; usa el recordatorio",
        "must be a whole number of days from 1 to 3650": "debe ser un número entero de días entre 1 y 3650",
        "must be a whole number of hours from 0 to 720": "debe ser un número entero de horas entre 0 y 720",
        "must be off, remind or automatic": "debe ser desactivada, recordatorio o automática",
        "is already the name of another of your integrations": "ya es el nombre de otra de tus integraciones",
        "must be a non-empty string of at most 100 visible characters": "debe ser un texto visible de como máximo 100 caracteres",
    ]
}
