"""Normalisation of feed values (profiles/normalize.py): phones, emails, names, gender, dates, id numbers,
placeholders, card numbers and masking. Pure functions, plus one load to show the batch counts invalid ids."""
from datetime import date

import pytest

from profiles.feeds import feed_load
from profiles.models import SourceRecord
from profiles.normalize import (
    RowRejected, compose_full_name, is_placeholder, is_valid_cn_resident_id, mask_email, mask_id_number,
    mask_name, mask_phone, name_match_key, normalize_customer_row, normalize_email, normalize_id_number,
    normalize_name, normalize_phone, redact_raw_row, tokenize_pan,
)
from profiles.resolution import identity_resolve
from tests.factories import customer


def iso7064_mod11_2(body17: str) -> str:
    """The CN resident id with its check character, by the ISO 7064 MOD 11-2 recursion (not the weight table
    the production code uses, so the two cross-check each other)."""
    p = 0
    for digit in body17:
        p = (p + int(digit)) * 2 % 11
    check = (12 - p) % 11
    return body17 + ("X" if check == 10 else str(check))


RESIDENT_ID = iso7064_mod11_2("44030519850615123")  # Shenzhen, born 1985-06-15
RESIDENT_ID_X = iso7064_mod11_2("11010519491231002")  # the well-known example ending in X
BAD_CHECKSUM_ID = RESIDENT_ID[:-1] + ("0" if RESIDENT_ID[-1] != "0" else "1")


def row(**fields) -> dict:
    return normalize_customer_row({"customer_key": "K1", **fields})


# --- phones ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    "13824681357", "138 2468 1357", "138-2468-1357", "+86 138 2468 1357", "+86-138-2468-1357", "+8613824681357",
    "0086 13824681357", "008613824681357", "86 13824681357", " 13824681357 ", "１３８２４６８１３５７",
])
def test_chinese_mobile_in_any_common_form_becomes_e164(raw):
    assert normalize_phone(raw) == "+8613824681357"


@pytest.mark.parametrize("raw, e164", [
    ("010-6655 8800", "+861066558800"),  # Beijing landline with trunk prefix
    ("(010) 66558800", "+861066558800"),
    ("021-62345678", "+862162345678"),
    ("0755 8888 1234", "+8675588881234"),
    ("+1 650 253 0000", "+16502530000"),  # foreign numbers keep their own country code
    ("+44 20 7946 0958", "+442079460958"),
])
def test_landlines_and_foreign_numbers_become_e164(raw, e164):
    assert normalize_phone(raw) == e164


def test_default_region_is_cn_and_can_be_changed():
    assert normalize_phone("6502530000", default_region="US") == "+16502530000"
    assert normalize_phone("13824681357") == "+8613824681357"


@pytest.mark.parametrize("raw", ["", None, "12345", "abc", "10086", "138 2468", "+86 999 0000 1234x", "null"])
def test_invalid_phones_are_dropped(raw):
    assert normalize_phone(raw) is None


def test_an_unusable_phone_is_a_warning_not_a_rejection():
    assert row(phone="12345")["warnings"] == ["invalid_phone"]
    assert row(phone="13800000000")["warnings"] == ["placeholder_phone"]
    assert row(phone="13824681357")["phone"] == "+8613824681357"


# --- emails ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("  Zhang.Wei@Example.COM ", "zhang.wei@example.com"),
    ("LI_NA+cards@Bank.CN", "li_na+cards@bank.cn"),
    ("ｚｈａｎｇ＠ｅｘａｍｐｌｅ．ｃｏｍ", "zhang@example.com"),  # full-width typed on a Chinese keyboard
])
def test_emails_are_trimmed_and_lower_cased(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["", None, "not-an-email", "a@b", "two@@signs.cn", "spa ce@bank.cn"])
def test_malformed_emails_are_dropped(raw):
    assert normalize_email(raw) is None


def test_an_unusable_email_is_a_warning_not_a_rejection():
    assert row(email="not-an-email")["warnings"] == ["invalid_email"]
    assert row(email="TEST@TEST.COM")["warnings"] == ["placeholder_email"]


# --- names -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, clean", [
    ("  张伟 ", "张伟"),
    ("Zhang   Wei", "Zhang Wei"),
    ("ＺＨＡＮＧ　Ｗｅｉ", "ZHANG Wei"),  # full-width letters and the ideographic space folded to half-width
    ("欧阳娜娜", "欧阳娜娜"),
    ("阿卜杜·热合曼", "阿卜杜·热合曼"),  # Chinese kept exactly as written, middle dot included
    ("Na", "Na"),  # a real pinyin given name, not the "n/a" placeholder
])
def test_names_are_trimmed_and_width_folded_but_otherwise_kept_as_written(raw, clean):
    assert normalize_name(raw) == clean


def test_chinese_compatibility_ideographs_are_not_rewritten():
    # NFKC would turn U+F900 into U+8C48; a name must stay exactly as the customer's documents spell it.
    assert normalize_name("\uf900明") == "\uf900明"


@pytest.mark.parametrize("variants", [
    ("Zhang Wei", "ZHANG  WEI", "zhang-wei", "ＺＨＡＮＧ　ＷＥＩ", " zhang.wei "),
    ("张伟", "张 伟", " 张伟 "),
    ("阿卜杜·热合曼", "阿卜杜•热合曼", "阿卜杜热合曼"),
])
def test_name_match_key_is_case_and_width_folded_without_separators(variants):
    assert len({name_match_key(v) for v in variants}) == 1


def test_name_match_key_keeps_different_names_apart():
    assert name_match_key("Li Na") != name_match_key("Li Nan")
    assert name_match_key("张伟") != name_match_key("张玮")


def test_family_and_given_name_compose_a_full_name_and_both_forms_are_kept():
    assert compose_full_name("张", "伟") == "张伟"
    assert compose_full_name("欧阳 ", " 娜娜") == "欧阳娜娜"
    assert compose_full_name("Zhang", "Wei") == "Zhang Wei"
    assert compose_full_name(None, "Wei") == "Wei"

    composed = row(family_name="张", given_name="伟")
    assert (composed["full_name"], composed["family_name"], composed["given_name"]) == ("张伟", "张", "伟")
    full_only = row(full_name="张伟")
    assert (full_only["full_name"], full_only["family_name"], full_only["given_name"]) == ("张伟", None, None)
    both = row(full_name="Zhang Wei", family_name="ZHANG", given_name="Wei")
    assert (both["full_name"], both["family_name"], both["given_name"]) == ("Zhang Wei", "ZHANG", "Wei")
    # the two forms of one name give one match key
    assert composed["name_key"] == full_only["name_key"] == "张伟"
    assert both["name_key"] == row(family_name="Zhang", given_name="Wei")["name_key"] == "zhangwei"


# --- gender and birth date ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, gender", [
    ("M", "M"), ("m", "M"), ("Male", "M"), ("男", "M"), ("男性", "M"), ("Ｍ", "M"),
    ("F", "F"), ("female", "F"), ("FEMALE", "F"), ("女", "F"),
    ("U", "U"), ("", "U"), ("unknown", "U"), ("未知", "U"),
])
def test_gender_variants(raw, gender):
    assert row(gender=raw)["gender"] == gender


def test_an_unknown_gender_code_rejects_the_row():
    with pytest.raises(RowRejected, match="^gender"):
        row(gender="X")


@pytest.mark.parametrize("raw", ["1990-01-31", "19900131", "１９９０-０１-３１", " 1990-01-31 "])
def test_birth_dates_in_iso_form(raw):
    assert row(birth_date=raw)["birth_date"] == date(1990, 1, 31)


@pytest.mark.parametrize("raw, reason", [
    ("1990/01/31", "not an ISO date"),
    ("31-01-1990", "not an ISO date"),
    ("1990-02-30", "not a real date"),
    ("1899-12-31", "before 1900"),
    ("2999-01-01", "in the future"),
])
def test_bad_birth_dates_reject_the_row_with_a_reason(raw, reason):
    with pytest.raises(RowRejected, match=f"^birth_date: {reason}"):
        row(birth_date=raw)


# --- id numbers --------------------------------------------------------------------------------------------

def test_the_iso7064_reference_ids_are_valid_and_a_wrong_check_character_is_not():
    assert RESIDENT_ID_X.endswith("X")
    assert is_valid_cn_resident_id(RESIDENT_ID)
    assert is_valid_cn_resident_id(RESIDENT_ID_X)
    assert not is_valid_cn_resident_id(BAD_CHECKSUM_ID)
    assert not is_valid_cn_resident_id(RESIDENT_ID[:17])  # too short
    # a correct checksum around an impossible birth date (Feb 30) is still not an id
    assert not is_valid_cn_resident_id(iso7064_mod11_2("44030519850230123"))


def test_resident_id_is_normalised_before_the_check():
    assert normalize_id_number(f" {RESIDENT_ID_X[:6]} {RESIDENT_ID_X[6:14]} {RESIDENT_ID_X[14:].lower()} ",
                               "CN_RESIDENT") == (RESIDENT_ID_X, True)
    full_width = RESIDENT_ID.translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)})
    assert normalize_id_number(full_width, "CN_RESIDENT") == (RESIDENT_ID, True)


def test_valid_resident_id_is_hashed_masked_and_usable_for_matching():
    valid = row(id_type="CN_RESIDENT", id_number=RESIDENT_ID)
    assert valid["id_valid"] is True
    assert valid["id_number_masked"] == RESIDENT_ID[:3] + "*" * 11 + RESIDENT_ID[-4:]
    assert RESIDENT_ID not in repr(valid)  # the full number never leaves normalisation
    # the same number typed differently gives the same keyed hash, so the records match
    assert row(id_type="cn_resident", id_number=RESIDENT_ID_X.lower())["id_number_hash"] == \
        row(id_type="CN_RESIDENT", id_number=RESIDENT_ID_X)["id_number_hash"]
    # with no id_type, a number that passes the checksum is recognised as a resident id
    untyped = row(id_number=RESIDENT_ID)
    assert (untyped["id_type"], untyped["id_valid"]) == ("CN_RESIDENT", True)


def test_resident_id_with_a_bad_checksum_is_kept_but_not_valid_and_counted():
    invalid = row(id_type="CN_RESIDENT", id_number=BAD_CHECKSUM_ID)
    assert invalid["id_valid"] is False
    assert invalid["id_number_hash"] is not None  # kept (hashed and masked) for the data steward
    assert invalid["id_number_masked"].endswith(BAD_CHECKSUM_ID[-4:])
    assert invalid["warnings"] == ["invalid_id_checksum"]


@pytest.mark.django_db
def test_invalid_resident_id_is_counted_in_the_batch_and_never_links_records(write_feed):
    batch = feed_load(source="core", path=write_feed([
        customer("C1", full_name="黄磊", id_type="CN_RESIDENT", id_number=BAD_CHECKSUM_ID),
        customer("C2", full_name="Huang Lei", id_type="CN_RESIDENT", id_number=BAD_CHECKSUM_ID),
        customer("C3", full_name="周迅", id_type="CN_RESIDENT", id_number=RESIDENT_ID),
        customer("C4", full_name="Zhou Xun", id_type="CN_RESIDENT", id_number=RESIDENT_ID),
    ]))
    assert batch.rows_created == 4 and batch.rows_rejected == 0
    assert batch.warnings == {"invalid_id_checksum": 2}
    identity_resolve()

    records = {r.customer_key: r for r in SourceRecord.objects.all()}
    assert records["C1"].id_number_hash == records["C2"].id_number_hash is not None
    assert not records["C1"].id_valid
    assert records["C1"].profile_id != records["C2"].profile_id  # same invalid id: not a match
    assert records["C3"].profile_id == records["C4"].profile_id  # same valid id: one customer


# The first-generation form of RESIDENT_ID: no century, no check character.
LEGACY_RESIDENT_ID = RESIDENT_ID[:6] + RESIDENT_ID[8:17]


def test_a_15_digit_legacy_resident_id_becomes_its_18_digit_form():
    assert len(LEGACY_RESIDENT_ID) == 15
    assert normalize_id_number(LEGACY_RESIDENT_ID, "CN_RESIDENT") == (RESIDENT_ID, True)
    assert normalize_id_number(LEGACY_RESIDENT_ID, None) == (RESIDENT_ID, True)
    legacy, current = row(id_type="CN_RESIDENT", id_number=LEGACY_RESIDENT_ID), row(id_number=RESIDENT_ID)
    assert (legacy["id_type"], legacy["id_valid"], legacy["warnings"]) == ("CN_RESIDENT", True, [])
    assert legacy["id_number_hash"] == current["id_number_hash"]  # matched as the 18-digit number
    assert legacy["id_number_masked"] == RESIDENT_ID[:3] + "*" * 11 + RESIDENT_ID[-4:]
    # typed as another kind of document, the number is not a resident id and stays as written
    assert normalize_id_number(LEGACY_RESIDENT_ID, "OTHER") == (LEGACY_RESIDENT_ID, True)


def test_a_15_digit_resident_id_with_an_impossible_date_stays_invalid():
    feb_30 = LEGACY_RESIDENT_ID[:8] + "0230" + LEGACY_RESIDENT_ID[12:]
    assert normalize_id_number(feb_30, "CN_RESIDENT") == (feb_30, False)
    invalid = row(id_type="CN_RESIDENT", id_number=feb_30)
    assert (invalid["id_valid"], invalid["warnings"]) == (False, ["invalid_id_checksum"])
    assert invalid["id_number_masked"] == feb_30[:3] + "*" * 8 + feb_30[-4:]


@pytest.mark.parametrize("raw, id_type, expected", [
    ("e12345678", "PASSPORT", ("E12345678", True)),
    (" G 1234 5678 ", "PASSPORT", ("G12345678", True)),
    ("E1234-5678", "PASSPORT", ("E1234-5678", False)),  # passports are letters and digits only
    ("AB1", "PASSPORT", ("AB1", False)),  # too short
    ("HK-1234567(8)", "OTHER", ("HK-1234567(8)", True)),
    ("A1", "OTHER", ("A1", False)),
])
def test_passport_and_other_id_numbers(raw, id_type, expected):
    assert normalize_id_number(raw, id_type) == expected


def test_an_unknown_id_type_rejects_the_row():
    with pytest.raises(RowRejected, match="^id_type"):
        row(id_type="DRIVING_LICENCE", id_number="X1234567")


# --- placeholders ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, value", [
    ("phone", "13800000000"), ("phone", "+86 138 0000 0000"), ("phone", "0086 13800138000"),
    ("phone", "13911111111"), ("phone", "000000"), ("phone", "null"), ("phone", "12345678901"),
    ("email", "test@test.com"), ("email", "TEST@TEST.COM"), ("email", "noreply@bank.cn"),
    ("email", "000000@qq.com"), ("email", "null"), ("email", "someone@noemail.com"),
    ("id_number", "000000"), ("id_number", "000000000000000000"), ("id_number", "123456789012345678"),
    ("id_number", "11111111111111111X"), ("id_number", "NULL"), ("id_number", "unknown"),
    ("name", "test"), ("name", "测试"), ("name", "test1"), ("name", "null"), ("name", "123"), ("name", "XXX"),
])
def test_placeholder_values_are_recognised(kind, value):
    assert is_placeholder(kind, value)


@pytest.mark.parametrize("kind, value", [
    ("phone", "13824681357"), ("phone", "010-6655 8800"), ("email", "zhang.wei@example.com"),
    ("id_number", RESIDENT_ID), ("id_number", "E12345678"), ("name", "张伟"), ("name", "Na"),
])
def test_real_values_are_not_placeholders(kind, value):
    assert not is_placeholder(kind, value)


def test_placeholders_are_never_identifiers():
    normalised = row(full_name="test", phone="13800000000", email="test@test.com", id_type="CN_RESIDENT",
                     id_number="000000", postcode="000000", core_cif="null")
    for column in ("full_name", "name_key", "phone", "email", "id_number_hash", "id_number_masked", "postcode",
                   "core_cif"):
        assert normalised[column] is None, column
    assert normalised["id_valid"] is False
    assert set(normalised["warnings"]) == {"placeholder_name", "placeholder_id", "placeholder_phone",
                                           "placeholder_email"}
    assert normalize_phone("+86 138 0000 0000") is None
    assert normalize_email("test@test.com") is None
    assert normalize_name("测试用户") is None
    assert normalize_id_number("000000", "OTHER") == ("000000", False)


@pytest.mark.django_db
def test_records_sharing_only_placeholders_stay_apart(write_feed):
    filler = dict(phone="13800000000", email="test@test.com", id_type="CN_RESIDENT", id_number="000000000000000000",
                  birth_date="1980-01-01")
    feed_load(source="core", path=write_feed([customer("C1", full_name="甲", **filler),
                                              customer("C2", full_name="乙", **filler)]))
    identity_resolve()
    assert SourceRecord.objects.values("profile_id").distinct().count() == 2


# --- card numbers ------------------------------------------------------------------------------------------

def luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str(-total % 10)


PAN = luhn_complete("625807012345678")  # a 16-digit UnionPay-style number with a valid Luhn digit


def test_pan_becomes_keyed_token_bin_and_last4():
    token, bin6, last4 = tokenize_pan(PAN)
    assert (bin6, last4) == (PAN[:6], PAN[-4:])
    assert PAN not in token and PAN[6:12] not in token
    # separators and full-width digits do not change the token
    spaced = f"{PAN[:4]} {PAN[4:8]}-{PAN[8:12]} {PAN[12:]}"
    assert tokenize_pan(spaced)[0] == token
    assert tokenize_pan(PAN.translate({c: c + 0xFEE0 for c in range(0x30, 0x3A)}))[0] == token
    # another card gives another token
    assert tokenize_pan(luhn_complete("625807012345679"))[0] != token

    normalised = row(pan=PAN)
    assert (normalised["pan_token"], normalised["pan_bin"], normalised["pan_last4"]) == (token, bin6, last4)
    assert PAN not in repr(normalised)


@pytest.mark.parametrize("raw", ["", PAN[:-1] + str((int(PAN[-1]) + 1) % 10), PAN[:12], "6258-07AB-1234-5678"])
def test_a_pan_that_is_not_a_card_number_rejects_the_row_without_showing_it(raw):
    with pytest.raises(RowRejected, match="^pan") as exc:
        tokenize_pan(raw)
    digits = "".join(c for c in raw if c.isdigit())
    assert len(digits) < 8 or digits not in str(exc.value)


def test_a_pan_row_that_is_rejected_is_kept_redacted():
    bad = PAN[:-1] + str((int(PAN[-1]) + 1) % 10)
    redacted = redact_raw_row({"customer_key": "K1", "pan": bad, "id_number": RESIDENT_ID, "city": "深圳"})
    assert redacted == {"customer_key": "K1", "pan": bad[:6] + "******" + bad[-4:],
                        "id_number": RESIDENT_ID[:3] + "*" * 11 + RESIDENT_ID[-4:], "city": "深圳"}


# --- masking -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn, value, masked", [
    (mask_phone, "+8613824681357", "138****1357"),
    (mask_phone, "138 2468 1357", "138****1357"),
    (mask_phone, "+861066558800", "******8800"),
    (mask_phone, "+16502530000", "+1******0000"),
    (mask_email, "zhang.wei@example.com", "z*******@example.com"),
    (mask_email, "li@bank.cn", "l*@bank.cn"),
    (mask_name, "张伟", "张*"),
    (mask_name, "欧阳娜娜", "欧***"),
    (mask_name, "Zhang Wei", "Z*** W**"),
    (mask_id_number, "E12345678", "*******78"),
])
def test_masking_shows_only_what_a_service_agent_may_see(fn, value, masked):
    assert fn(value) == masked


def test_masked_resident_id_keeps_length_region_prefix_and_last_four():
    masked = mask_id_number(RESIDENT_ID)
    assert masked == "440***********" + RESIDENT_ID[-4:]
    assert len(masked) == len(RESIDENT_ID)
