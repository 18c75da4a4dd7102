from profiles.names import name_parts, pinyin_key


def test_chinese_characters_and_their_pinyin_share_one_key():
    assert {pinyin_key(n) for n in ("张伟", "ZHANG Wei", "zhang-wei", "Zhāng Wěi", "ＺＨＡＮＧ　ＷＥＩ")} == {"zhangwei"}
    assert pinyin_key("吕布") == "lvbu"
    assert pinyin_key("  ") is None and pinyin_key(None) is None


def test_name_parts_from_columns_or_the_full_name():
    assert name_parts(None, "李", "小明") == ("li", "xiaoming")
    assert name_parts("欧阳娜娜", None, None) == ("ouyang", "nana")  # compound family name
    assert name_parts("王小明", None, None) == ("wang", "xiaoming")
    assert name_parts("John Paul Smith", None, None) == ("smith", "johnpaul")
    assert name_parts("Madonna", None, None) == (None, "madonna")


def test_a_chinese_name_in_characters_or_in_latin_letters_with_a_chinese_family_name():
    from profiles.names import is_chinese_name
    assert is_chinese_name("刘雪", None, None) and is_chinese_name(None, "黄", "文睿")
    assert is_chinese_name("HUANG TINGTING", None, None) and is_chinese_name("Tingting Huang", None, None)
    assert is_chinese_name(None, "Du", "Hongran") and is_chinese_name(None, "OUYANG", "NANA")
    assert not is_chinese_name(None, "potempa", "oscar") and not is_chinese_name("Samantha Grierson", None, None)
