from broker.web.i18n import TEXTS, choose_language


def test_german_is_chosen_when_preferred():
    assert choose_language("de-DE,de;q=0.9,en;q=0.8") == "de"


def test_quality_values_are_respected():
    assert choose_language("de;q=0.3, en;q=0.9") == "en"


def test_unknown_or_missing_languages_fall_back_to_english():
    assert choose_language("fr-FR") == "en"
    assert choose_language(None) == "en"
    assert choose_language("de;q=abc") in ("de", "en")


def test_both_languages_have_every_text():
    assert set(TEXTS["de"]) == set(TEXTS["en"])


def test_the_form_labels_are_the_ones_users_expect():
    assert (TEXTS["en"]["username"], TEXTS["en"]["password"], TEXTS["en"]["one_time_code"]) == \
        ("Username", "Password", "One-time code")
    assert (TEXTS["de"]["username"], TEXTS["de"]["password"], TEXTS["de"]["one_time_code"]) == \
        ("Benutzername", "Passwort", "Einmalcode")


def test_every_language_has_every_text_and_the_forms_its_plural_rule_names():
    """The catalogues are what translators edit: none may lack a text, and a counting text
    has as many forms as its language's rule (one and other in German and English)."""
    for language in ("de", "en"):
        for key, text in TEXTS[language].items():
            assert text, (language, key)
            if isinstance(text, list):
                assert len(text) == 2 and all(text), (language, key)


def test_a_count_of_one_is_not_spoken_of_in_the_plural():
    one, many = TEXTS["de"]["c_drain_logoff_at"]
    assert "wird" in one and "werden" in many     # "1 Benutzer … wird", "3 Benutzer … werden"
    one, many = TEXTS["en"]["c_drain_logoff_at"]
    assert "user on" in one and "users on" in many
