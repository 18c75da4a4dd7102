"""Person names for matching: family and given name apart, and one Latin spelling for names in Chinese characters.

A bank holds the same customer as 张伟 in core banking and as "ZHANG WEI" (or "Wei Zhang") on a card application,
so names are compared through their pinyin, and the given name is told apart from the family name wherever the
record allows it.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from pypinyin import Style, lazy_pinyin

from profiles.normalize import fold_width

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_NOT_LETTER = re.compile(r"[^a-z]+")
_TOKEN_SPLIT = re.compile(r"[\s,.·•\-'’・‧]+")

# Two-character family names (复姓) that are still in use; any other Chinese full name has a one-character family
# name.
COMPOUND_FAMILY_NAMES = frozenset({
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒", "夏侯", "轩辕",
    "令狐", "端木", "独孤", "南宫", "西门", "百里", "呼延", "赫连", "澹台", "公冶", "宗政", "濮阳", "太史", "申屠",
    "闻人", "钟离", "万俟", "仲孙", "拓跋", "第五", "司空", "左丘", "东郭", "梁丘", "锺离", "闾丘",
})


# The family names of about nine Chinese in ten (the hundred most common, 百家姓 order aside), for telling a Chinese
# name written in Latin letters ("HUANG TINGTING") from another.
COMMON_FAMILY_NAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范"
    "金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)


def has_cjk(value: str | None) -> bool:
    return bool(value) and _CJK.search(value) is not None


@lru_cache(maxsize=200_000)
def pinyin_key(name: str | None) -> str | None:
    """Lower-case ASCII letters only: Chinese characters as toneless pinyin, Latin letters without accents.

    "张伟", "ZHANG Wei", "zhang-wei" and "Zhāng Wěi" all give "zhangwei"; None when no letter is left.
    """
    if not name:
        return None
    text = fold_width(name)
    if has_cjk(text):
        text = "".join(lazy_pinyin(text, style=Style.NORMAL, errors="default"))
    text = unicodedata.normalize("NFKD", text.casefold())
    key = _NOT_LETTER.sub("", "".join(ch for ch in text if not unicodedata.combining(ch)).replace("ü", "v"))
    return key or None


def split_chinese_name(full_name: str) -> tuple[str, str | None]:
    """(family, given) of a name written in Chinese characters, family name first."""
    name = "".join(full_name.split())
    family_len = 2 if name[:2] in COMPOUND_FAMILY_NAMES and len(name) > 2 else 1
    return name[:family_len], (name[family_len:] or None)


def name_parts(full_name: str | None, family_name: str | None, given_name: str | None) -> tuple[str | None, str | None]:
    """(family, given) as pinyin keys, from the separate columns when the source has them, else from the full name.

    A Latin full name does not say which token is the family name ("Wei Zhang" and "Zhang Wei" both occur), so
    its family part is the last token and its given part the rest; comparisons also try the parts swapped.
    """
    if family_name or given_name:
        return pinyin_key(family_name), pinyin_key(given_name)
    if not full_name:
        return None, None
    name = fold_width(full_name).strip()
    if has_cjk(name):
        family, given = split_chinese_name(name)
        return pinyin_key(family), pinyin_key(given)
    tokens = [t for t in _TOKEN_SPLIT.split(name) if t]
    if len(tokens) < 2:
        return None, pinyin_key(name)
    return pinyin_key(tokens[-1]), pinyin_key(" ".join(tokens[:-1]))


_CHINESE_FAMILY_KEYS = frozenset(
    {pinyin_key(name) for name in COMPOUND_FAMILY_NAMES} | {pinyin_key(name) for name in COMMON_FAMILY_NAMES})


def is_chinese_name(full_name: str | None, family_name: str | None, given_name: str | None) -> bool:
    """Written in Chinese characters, or in Latin letters with a common Chinese family name (in either place: the
    order of a Latin name is unknown)."""
    if has_cjk(full_name) or has_cjk(family_name) or has_cjk(given_name):
        return True
    family, given = name_parts(full_name, family_name, given_name)
    return family in _CHINESE_FAMILY_KEYS or (not family_name and given in _CHINESE_FAMILY_KEYS)
