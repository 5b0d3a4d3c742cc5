"""Portal texts in German and English, chosen by the browser's Accept-Language."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Pforte — your desktop",
        "login_heading": "Sign in",
        "login_intro": "Sign in with your municipal account.",
        "username": "Username",
        "password": "Password",
        "sign_in": "Sign in",
        "mfa_heading": "One-time code",
        "mfa_intro": "Enter the 6-digit code from your authenticator app.",
        "one_time_code": "One-time code",
        "confirm": "Confirm",
        "code_hint": "Lost your phone? Enter one of your recovery codes instead.",
        "recovery_heading": "Your recovery codes",
        "recovery_intro": "If you lose your phone, each of these codes signs you in once instead "
                          "of a one-time code. Print them or write them down and keep them in a "
                          "safe place: they are shown only now.",
        "continue": "Continue",
        "enrol_heading": "Set up your authenticator app",
        "enrol_intro": "Scan this QR code with your authenticator app, or type in the key below. "
                       "Then enter the code the app shows to confirm.",
        "enrol_key": "Key",
        "desktops_heading": "Your desktops",
        "desktops_hello": "Signed in as {name}.",
        "no_desktops": "No desktop has been assigned to you. Please contact your IT service desk.",
        "open": "Open",
        "open_desktop": "Open {name}",
        "ctrl_alt_del": "Ctrl+Alt+Del",
        "quality": "Round trip {ms} ms · {kbps} kbit/s",
        "full_screen": "Full screen",
        "desktop_heading": "Desktop: {name}",
        "sign_out": "Sign out",
        "connecting": "Connecting to your desktop…",
        "connected": "Connected",
        "reconnecting": "Connection interrupted — reconnecting…",
        "disconnected": "The connection to your desktop has ended.",
        "back": "Back to your desktops",
        "reconnect": "Connect again",
        # refusals
        "bad_credentials": "Username or password is not correct.",
        "unknown_tenant": "We do not know this login domain. Please sign in as name@your-town.",
        "code_rejected": "The code is not correct or has expired. Please enter the current code.",
        "code_replayed": "This code was already used. Please wait for the next code.",
        "login_required": "Please sign in.",
        "account_state": "Your account may not sign in right now. Please call your IT service "
                         "desk.",
        "account_disabled": "Your account is disabled. Please call your IT service desk.",
        "account_expired": "Your account has expired. Please call your IT service desk.",
        "password_expired": "Your password has expired. Please change it at a town hall "
                            "computer or call your IT service desk.",
        "must_change_password": "You must change your password before you sign in here. Please "
                                "change it at a town hall computer or call your IT service desk.",
        "logon_restricted": "Your account may not sign in at this time or from here.",
        "too_many_attempts": "Too many failed attempts. For your protection, signing in is "
                             "paused for a few minutes. Please try again later.",
        "not_entitled": "You are not allowed to use this desktop.",
        "directory_unavailable": "The login service of your municipality is not reachable right "
                                 "now. Please try again in a few minutes.",
        "store_unavailable": "Signing in is temporarily unavailable. Please try again in a "
                             "minute; desktops already open keep running.",
        "no_free_desktop": "All desktops of this kind are in use. Please try again in a minute.",
        "desktop_start_failed": "Your desktop could not be started. Please try again in a "
                                "minute; if it happens again, call your IT service desk.",
        "own_desktop_unavailable": "Your desktop is not available right now (maintenance). "
                                   "Please try again later or call your IT service desk.",
        "pool_busy": "Many colleagues are signing in right now. Please try again in a few "
                     "seconds.",
        "bad_request": "The request could not be processed.",
        "viewer_mismatch": "This desktop cannot be opened with that viewer.",
        "not_admin": "You are not an administrator of this municipality.",
        "not_found": "There is no such host, session, device or enrolment code.",
        "device_revoked": "This device has been withdrawn from service. Please call your IT "
                          "service desk.",
        "conflict": "This action is not possible in the host's current state.",
        "error": "Something went wrong. Please try again; if it happens again, call your IT "
                 "service desk and quote reference {ref}.",
        "gateway_4000": "Your session was ended after a period of inactivity.",
        "gateway_4001": "Your desktop was opened in another window.",
        "gateway_4003": "You were logged off from your desktop (by your IT service, or for "
                        "maintenance).",
        "gateway_4403": "This desktop cannot be reached through this gateway. Please call your IT "
                        "service desk.",
        "gateway_4408": "The connection took too long to start. Please try again.",
        "gateway_4406": "The connection was ended: this desktop's clipboard rules do not allow "
                        "what was sent.",
        "notice_heading": "Notice from your IT service",
        "notice_default": "This desktop will be shut down for maintenance.",
        "notice_countdown": "You will be logged off in {time}. Please save your work now.",
        "notice_now": "You are being logged off now.",
        "notice_dismiss": "OK",
        "console": "Operator console",
        "c_signin_heading": "Sign in to the console",
        "c_signin_directory": "Administrators of a municipality sign in with their directory "
                              "account and one-time code.",
        "c_signin_link": "Sign in with your directory account",
        "c_token": "Operator token",
        "c_token_sign_in": "Sign in with the token",
        "c_token_wrong": "This token is not valid, or gives no admin right.",
        "c_tenant": "Municipality",
        "c_live": "Live: updates as it happens",
        "c_offline": "Not updating right now — reconnecting…",
        "c_hosts": "Hosts",
        "c_host": "Host",
        "c_state": "State",
        "c_healthy": "Reachable",
        "c_seats": "Seats used / free",
        "c_drain": "Drain",
        "c_actions": "Actions",
        "c_state_active": "active",
        "c_state_draining": "draining",
        "c_state_disabled": "disabled",
        "c_state_maintenance": "maintenance",
        "c_yes": "yes",
        "c_no": "no",
        "c_action_enable": "Enable",
        "c_action_drain": "Drain…",
        "c_action_disable": "Disable",
        "c_action_maintenance": "Maintenance",
        "c_drain_until": "until {time}",
        "c_drain_wait": "no logoff",
        "c_sessions": "Sessions",
        "c_filter": "Filter by user or host",
        "c_user": "User",
        "c_pool": "Desktop",
        "c_since": "Since",
        "c_session_state": "State",
        "c_session_pending": "starting",
        "c_session_connected": "connected",
        "c_session_disconnected": "disconnected",
        "c_action_message": "Message…",
        "c_action_logoff": "Log off",
        "c_none": "None.",
        "c_users": "Users",
        "c_user_name": "User name",
        "c_mfa_reset": "Reset second factor",
        "c_devices": "Thin clients",
        "c_site": "Site",
        "c_device_class": "Device class",
        "c_code_create": "Create enrolment code",
        "c_code_made": "Enrolment code: {code} (valid until {time})",
        "c_device": "Device",
        "c_last_seen": "Last seen",
        "c_revoked": "revoked",
        "c_action_revoke": "Revoke",
        "c_assignments": "Dedicated desktops",
        "c_assign_pool": "Desktop pool",
        "c_assign_do": "Assign",
        "c_logon": "Logon",
        "c_logon_total": "{seconds} s",
        "c_logon_slow": "{seconds} s — slow",
        "c_phase_directory_search": "Directory: search",
        "c_phase_directory_bind": "Directory: password",
        "c_phase_directory_groups": "Directory: groups",
        "c_phase_second_factor": "Second factor",
        "c_phase_placement": "Placement",
        "c_phase_desktop_start": "Desktop start",
        "c_phase_ticket": "Ticket",
        "c_phase_gateway_redeem": "Gateway",
        "c_phase_desktop_handshake": "Desktop handshake",
        "c_usage": "Usage",
        "c_month": "Month",
        "c_session_count": "Sessions",
        "c_desktop_hours": "Desktop hours",
        "c_csv": "Download as CSV",
        "c_audit": "Audit log",
        "c_audit_search": "Search the audit log",
        "c_time": "Time",
        "c_actor": "Who",
        "c_action": "Action",
        "c_result": "Result",
        "c_detail": "Details",
        "c_confirm_heading": "Please confirm",
        "c_confirm": "Confirm",
        "c_cancel": "Cancel",
        "c_drain_heading": "Drain {host}",
        "c_drain_minutes": "Deadline in minutes (0: none)",
        "c_drain_message": "Message to the users (optional)",
        "c_drain_logoff": "Log off who is still there at the deadline",
        "c_drain_do": "Drain",
        "c_drain_logoff_at": "{count} users on {host} will be logged off at {time}.",
        "c_drain_asked": "{count} users on {host} will be asked to log off; nobody is logged off.",
        "c_drain_nobody": "Nobody is on {host}: from now on it takes no new sessions.",
        "c_confirm_logoff": "{user} on {host} will be logged off now. Unsaved work is lost.",
        "c_confirm_disable": "{host} takes no new sessions, and users with a session there are "
                             "placed elsewhere when they connect again.",
        "c_confirm_maintenance": "{host} leaves its pools for maintenance.",
        "c_confirm_mfa": "{user} must set up the authenticator app again at the next sign-in.",
        "c_confirm_revoke": "{device} can no longer sign in.",
        "c_message_heading": "Message to {user}",
        "c_message_text": "Message",
        "c_message_send": "Send",
        "c_message_reached": "The message was shown to {user}.",
        "c_message_not_reached": "{user} is not connected right now: the message could not be "
                                 "shown.",
        "c_done": "Done.",
        "c_failed": "Not done: {why}",
        "clipboard": "Clipboard",
        "clipboard_heading": "Clipboard",
        "clipboard_to_desktop": "Text for the desktop",
        "clipboard_to_desktop_hint": "Paste text here (Ctrl+V) and send it; then paste it in the "
                                     "desktop.",
        "clipboard_send": "Send to the desktop",
        "clipboard_sent": "Sent to the desktop.",
        "clipboard_from_desktop": "Copied on the desktop",
        "clipboard_copy": "Copy to my computer",
        "clipboard_copied": "Copied to your computer's clipboard.",
        "clipboard_copy_failed": "The browser did not allow it: select the text and press Ctrl+C.",
        "clipboard_only_in": "For this desktop, text can only be copied into the desktop.",
        "clipboard_only_out": "For this desktop, text can only be copied out of the desktop.",
        "clipboard_close": "Close the clipboard",
        "gateway_4429": "There are too many connections from your network right now. Please try "
                        "again shortly.",
        "gateway_4503": "The connection could not be confirmed right now. Please try again "
                        "shortly.",
        "reconnecting_countdown": "Connection interrupted — reconnecting (at most {seconds} s "
                                  "more)…",
        "gateway_4401": "The connection permit was not accepted. Please open the desktop again.",
        "gateway_4409": "The connection permit was already used. Please open the desktop again.",
        "gateway_4502": "Your desktop cannot be reached right now. Please try again shortly.",
        "gateway_other": "The connection to your desktop could not be established.",
    },
    "de": {
        "title": "Pforte — Ihr Arbeitsplatz",
        "login_heading": "Anmelden",
        "login_intro": "Melden Sie sich mit Ihrem Konto der Kommune an.",
        "username": "Benutzername",
        "password": "Passwort",
        "sign_in": "Anmelden",
        "mfa_heading": "Einmalcode",
        "mfa_intro": "Geben Sie den 6-stelligen Code aus Ihrer Authenticator-App ein.",
        "one_time_code": "Einmalcode",
        "confirm": "Bestätigen",
        "code_hint": "Telefon verloren? Geben Sie stattdessen einen Ihrer Wiederherstellungscodes "
                     "ein.",
        "recovery_heading": "Ihre Wiederherstellungscodes",
        "recovery_intro": "Falls Sie Ihr Telefon verlieren, meldet Sie jeder dieser Codes einmal "
                          "an Stelle eines Einmalcodes an. Drucken Sie sie aus oder schreiben Sie "
                          "sie auf und bewahren Sie sie sicher auf: Sie werden nur jetzt "
                          "angezeigt.",
        "continue": "Weiter",
        "enrol_heading": "Authenticator-App einrichten",
        "enrol_intro": "Scannen Sie diesen QR-Code mit Ihrer Authenticator-App oder geben Sie den "
                       "Schlüssel unten ein. Bestätigen Sie dann mit dem Code, den die App anzeigt.",
        "enrol_key": "Schlüssel",
        "desktops_heading": "Ihre Arbeitsplätze",
        "desktops_hello": "Angemeldet als {name}.",
        "no_desktops": "Ihnen ist kein Arbeitsplatz zugewiesen. Bitte wenden Sie sich an Ihren "
                       "IT-Service.",
        "open": "Öffnen",
        "open_desktop": "{name} öffnen",
        "ctrl_alt_del": "Strg+Alt+Entf",
        "quality": "Antwortzeit {ms} ms · {kbps} kbit/s",
        "full_screen": "Vollbild",
        "desktop_heading": "Arbeitsplatz: {name}",
        "sign_out": "Abmelden",
        "connecting": "Verbindung zu Ihrem Arbeitsplatz wird aufgebaut …",
        "connected": "Verbunden",
        "reconnecting": "Verbindung unterbrochen – wird wiederhergestellt …",
        "disconnected": "Die Verbindung zu Ihrem Arbeitsplatz wurde beendet.",
        "back": "Zurück zu Ihren Arbeitsplätzen",
        "reconnect": "Erneut verbinden",
        "bad_credentials": "Benutzername oder Passwort ist nicht korrekt.",
        "unknown_tenant": "Diese Anmeldedomäne ist uns nicht bekannt. Bitte melden Sie sich als "
                          "name@ihre-kommune an.",
        "code_rejected": "Der Code ist nicht korrekt oder abgelaufen. Bitte geben Sie den "
                         "aktuellen Code ein.",
        "code_replayed": "Dieser Code wurde bereits verwendet. Bitte warten Sie auf den nächsten "
                         "Code.",
        "login_required": "Bitte melden Sie sich an.",
        "account_state": "Ihr Konto darf sich gerade nicht anmelden. Bitte rufen Sie Ihren "
                         "IT-Service an.",
        "account_disabled": "Ihr Konto ist deaktiviert. Bitte rufen Sie Ihren IT-Service an.",
        "account_expired": "Ihr Konto ist abgelaufen. Bitte rufen Sie Ihren IT-Service an.",
        "password_expired": "Ihr Passwort ist abgelaufen. Bitte ändern Sie es an einem Rechner "
                            "im Rathaus oder rufen Sie Ihren IT-Service an.",
        "must_change_password": "Sie müssen Ihr Passwort ändern, bevor Sie sich hier anmelden. "
                                "Bitte ändern Sie es an einem Rechner im Rathaus oder rufen Sie "
                                "Ihren IT-Service an.",
        "logon_restricted": "Ihr Konto darf sich zu dieser Zeit oder von hier nicht anmelden.",
        "too_many_attempts": "Zu viele Fehlversuche. Zu Ihrem Schutz ist die Anmeldung für "
                             "einige Minuten gesperrt. Bitte versuchen Sie es später erneut.",
        "not_entitled": "Sie sind für diesen Arbeitsplatz nicht freigeschaltet.",
        "directory_unavailable": "Der Anmeldedienst Ihrer Kommune ist gerade nicht erreichbar. "
                                 "Bitte versuchen Sie es in einigen Minuten erneut.",
        "store_unavailable": "Die Anmeldung ist vorübergehend nicht möglich. Bitte versuchen "
                             "Sie es in einer Minute erneut; geöffnete Arbeitsplätze laufen "
                             "weiter.",
        "no_free_desktop": "Alle Arbeitsplätze dieser Art sind belegt. Bitte versuchen Sie es in "
                           "einer Minute erneut.",
        "desktop_start_failed": "Ihr Arbeitsplatz konnte nicht gestartet werden. Bitte "
                                "versuchen Sie es in einer Minute erneut; wenn es wieder "
                                "passiert, rufen Sie Ihren IT-Service an.",
        "own_desktop_unavailable": "Ihr Arbeitsplatz ist gerade nicht verfügbar (Wartung). "
                                   "Bitte versuchen Sie es später erneut oder rufen Sie Ihren "
                                   "IT-Service an.",
        "pool_busy": "Gerade melden sich viele Kolleginnen und Kollegen an. Bitte versuchen Sie "
                     "es in einigen Sekunden erneut.",
        "bad_request": "Die Anfrage konnte nicht verarbeitet werden.",
        "viewer_mismatch": "Dieser Arbeitsplatz lässt sich mit diesem Programm nicht öffnen.",
        "not_admin": "Sie sind nicht Administrator dieser Kommune.",
        "not_found": "Diesen Host, diese Sitzung, dieses Gerät oder diesen Registrierungscode "
                     "gibt es nicht.",
        "device_revoked": "Dieses Gerät wurde außer Betrieb genommen. Bitte rufen Sie Ihren "
                          "IT-Service an.",
        "conflict": "Diese Aktion ist im aktuellen Zustand des Hosts nicht möglich.",
        "error": "Etwas ist schiefgegangen. Bitte versuchen Sie es erneut; wenn es wieder "
                 "passiert, rufen Sie Ihren IT-Service an und nennen Sie die Referenz {ref}.",
        "gateway_4000": "Ihre Sitzung wurde nach längerer Inaktivität beendet.",
        "gateway_4001": "Ihr Arbeitsplatz wurde in einem anderen Fenster geöffnet.",
        "gateway_4003": "Sie wurden von Ihrem Arbeitsplatz abgemeldet (durch Ihren IT-Service "
                        "oder wegen Wartung).",
        "gateway_4403": "Dieser Arbeitsplatz ist über dieses Gateway nicht erreichbar. Bitte rufen "
                        "Sie Ihren IT-Service an.",
        "gateway_4408": "Der Verbindungsaufbau hat zu lange gedauert. Bitte versuchen Sie es noch "
                        "einmal.",
        "gateway_4406": "Die Verbindung wurde beendet: Die Regeln dieses Arbeitsplatzes für die "
                        "Zwischenablage erlauben nicht, was gesendet wurde.",
        "notice_heading": "Hinweis Ihres IT-Service",
        "notice_default": "Dieser Arbeitsplatz wird für eine Wartung heruntergefahren.",
        "notice_countdown": "Sie werden in {time} abgemeldet. Bitte speichern Sie jetzt Ihre "
                            "Arbeit.",
        "notice_now": "Sie werden jetzt abgemeldet.",
        "notice_dismiss": "Verstanden",
        "console": "Betriebskonsole",
        "c_signin_heading": "An der Konsole anmelden",
        "c_signin_directory": "Administratorinnen und Administratoren einer Kommune melden sich "
                              "mit ihrem Verzeichniskonto und Einmalcode an.",
        "c_signin_link": "Mit dem Verzeichniskonto anmelden",
        "c_token": "Betreiber-Token",
        "c_token_sign_in": "Mit dem Token anmelden",
        "c_token_wrong": "Dieses Token ist nicht gültig oder gibt kein Administrationsrecht.",
        "c_tenant": "Kommune",
        "c_live": "Live: wird laufend aktualisiert",
        "c_offline": "Gerade keine Aktualisierung – Verbindung wird wiederhergestellt …",
        "c_hosts": "Hosts",
        "c_host": "Host",
        "c_state": "Zustand",
        "c_healthy": "Erreichbar",
        "c_seats": "Plätze belegt / frei",
        "c_drain": "Leerung",
        "c_actions": "Aktionen",
        "c_state_active": "aktiv",
        "c_state_draining": "wird geleert",
        "c_state_disabled": "gesperrt",
        "c_state_maintenance": "Wartung",
        "c_yes": "ja",
        "c_no": "nein",
        "c_action_enable": "Freigeben",
        "c_action_drain": "Leeren …",
        "c_action_disable": "Sperren",
        "c_action_maintenance": "Wartung",
        "c_drain_until": "bis {time} Uhr",
        "c_drain_wait": "ohne Abmeldung",
        "c_sessions": "Sitzungen",
        "c_filter": "Nach Benutzer oder Host filtern",
        "c_user": "Benutzer",
        "c_pool": "Arbeitsplatz",
        "c_since": "Seit",
        "c_session_state": "Zustand",
        "c_session_pending": "wird gestartet",
        "c_session_connected": "verbunden",
        "c_session_disconnected": "getrennt",
        "c_action_message": "Nachricht …",
        "c_action_logoff": "Abmelden",
        "c_none": "Keine.",
        "c_users": "Benutzer",
        "c_user_name": "Benutzername",
        "c_mfa_reset": "Zweiten Faktor zurücksetzen",
        "c_devices": "Thin Clients",
        "c_site": "Standort",
        "c_device_class": "Geräteklasse",
        "c_code_create": "Registrierungscode erzeugen",
        "c_code_made": "Registrierungscode: {code} (gültig bis {time})",
        "c_device": "Gerät",
        "c_last_seen": "Zuletzt gesehen",
        "c_revoked": "gesperrt",
        "c_action_revoke": "Sperren",
        "c_assignments": "Feste Arbeitsplätze",
        "c_assign_pool": "Arbeitsplatz-Pool",
        "c_assign_do": "Zuweisen",
        "c_logon": "Anmeldung",
        "c_logon_total": "{seconds} s",
        "c_logon_slow": "{seconds} s – langsam",
        "c_phase_directory_search": "Verzeichnis: Suche",
        "c_phase_directory_bind": "Verzeichnis: Passwort",
        "c_phase_directory_groups": "Verzeichnis: Gruppen",
        "c_phase_second_factor": "Zweiter Faktor",
        "c_phase_placement": "Platzvergabe",
        "c_phase_desktop_start": "Start des Arbeitsplatzes",
        "c_phase_ticket": "Ticket",
        "c_phase_gateway_redeem": "Gateway",
        "c_phase_desktop_handshake": "Verbindung zum Arbeitsplatz",
        "c_usage": "Nutzung",
        "c_month": "Monat",
        "c_session_count": "Sitzungen",
        "c_desktop_hours": "Desktop-Stunden",
        "c_csv": "Als CSV herunterladen",
        "c_audit": "Protokoll",
        "c_audit_search": "Im Protokoll suchen",
        "c_time": "Zeit",
        "c_actor": "Wer",
        "c_action": "Aktion",
        "c_result": "Ergebnis",
        "c_detail": "Details",
        "c_confirm_heading": "Bitte bestätigen",
        "c_confirm": "Bestätigen",
        "c_cancel": "Abbrechen",
        "c_drain_heading": "{host} leeren",
        "c_drain_minutes": "Frist in Minuten (0: keine)",
        "c_drain_message": "Nachricht an die Benutzer (freiwillig)",
        "c_drain_logoff": "Bei Fristende noch Angemeldete abmelden",
        "c_drain_do": "Leeren",
        "c_drain_logoff_at": "{count} Benutzer auf {host} werden um {time} Uhr abgemeldet.",
        "c_drain_asked": "{count} Benutzer auf {host} werden gebeten, sich abzumelden; niemand "
                         "wird abgemeldet.",
        "c_drain_nobody": "Auf {host} ist niemand angemeldet: Ab jetzt nimmt er keine neuen "
                          "Sitzungen an.",
        "c_confirm_logoff": "{user} auf {host} wird jetzt abgemeldet. Nicht gespeicherte Arbeit "
                            "geht verloren.",
        "c_confirm_disable": "{host} nimmt keine neuen Sitzungen an; wer dort eine Sitzung hat, "
                             "wird beim nächsten Verbinden anderswo untergebracht.",
        "c_confirm_maintenance": "{host} wird für die Wartung aus seinen Pools genommen.",
        "c_confirm_mfa": "{user} muss die Authenticator-App bei der nächsten Anmeldung neu "
                         "einrichten.",
        "c_confirm_revoke": "{device} kann sich nicht mehr anmelden.",
        "c_message_heading": "Nachricht an {user}",
        "c_message_text": "Nachricht",
        "c_message_send": "Senden",
        "c_message_reached": "Die Nachricht wurde {user} angezeigt.",
        "c_message_not_reached": "{user} ist gerade nicht verbunden: Die Nachricht konnte nicht "
                                 "angezeigt werden.",
        "c_done": "Erledigt.",
        "c_failed": "Nicht erledigt: {why}",
        "clipboard": "Zwischenablage",
        "clipboard_heading": "Zwischenablage",
        "clipboard_to_desktop": "Text für den Arbeitsplatz",
        "clipboard_to_desktop_hint": "Text hier einfügen (Strg+V) und senden; dann im Arbeitsplatz "
                                     "einfügen.",
        "clipboard_send": "An den Arbeitsplatz senden",
        "clipboard_sent": "An den Arbeitsplatz gesendet.",
        "clipboard_from_desktop": "Im Arbeitsplatz kopiert",
        "clipboard_copy": "Auf meinen Computer kopieren",
        "clipboard_copied": "In die Zwischenablage Ihres Computers kopiert.",
        "clipboard_copy_failed": "Der Browser hat es nicht erlaubt: Text markieren und Strg+C "
                                 "drücken.",
        "clipboard_only_in": "Bei diesem Arbeitsplatz kann Text nur in den Arbeitsplatz kopiert "
                             "werden.",
        "clipboard_only_out": "Bei diesem Arbeitsplatz kann Text nur aus dem Arbeitsplatz "
                              "kopiert werden.",
        "clipboard_close": "Zwischenablage schließen",
        "gateway_4429": "Aus Ihrem Netz bestehen gerade zu viele Verbindungen. Bitte versuchen Sie "
                        "es gleich noch einmal.",
        "gateway_4503": "Die Verbindung konnte gerade nicht bestätigt werden. Bitte versuchen Sie "
                        "es gleich noch einmal.",
        "reconnecting_countdown": "Verbindung unterbrochen – wird wiederhergestellt (noch "
                                  "höchstens {seconds} s) …",
        "gateway_4401": "Die Verbindungsberechtigung wurde nicht angenommen. Bitte öffnen Sie den "
                        "Arbeitsplatz erneut.",
        "gateway_4409": "Die Verbindungsberechtigung wurde bereits verwendet. Bitte öffnen Sie den "
                        "Arbeitsplatz erneut.",
        "gateway_4502": "Ihr Arbeitsplatz ist gerade nicht erreichbar. Bitte versuchen Sie es "
                        "gleich noch einmal.",
        "gateway_other": "Die Verbindung zu Ihrem Arbeitsplatz konnte nicht aufgebaut werden.",
    },
}

def choose_language(accept_language: str | None) -> str:
    """The first supported language in an Accept-Language header, by quality; English otherwise."""
    best, best_q = "en", -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if lang in TEXTS and q > best_q:
            best, best_q = lang, q
    return best
