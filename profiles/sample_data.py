"""Synthetic customer feeds for three bank source systems, with the ground truth of who is who.

`generate_sample_feeds(out_dir, customers, seed, mode=...)` writes, for `customers` people:

- ``core_customers.csv``   core banking customer master, keyed by the core system's own ``CUST_NO``;
- ``card_customers.csv``   credit-card system (``family_name``/``given_name``, ``core_cif``, ``pan`` ...);
- ``wealth_customers.csv`` wealth management (``core_cif``, ``risk_level`` ...);
- ``ground_truth.csv``     ``source,customer_key,person_id``: every record written, exactly once.

No database access; rows are streamed to the files as each person is generated, so memory stays bounded
(the only structure that grows with N is a fixed-size bit filter, 32 MB at one million people). The output
is a pure function of (customers, seed, rates): one ``random.Random(seed)``, no global random state, no
clock.

Rates (all in `FeedRates`, the one place to change them)
--------------------------------------------------------
Holdings (per person)
    every person has a core record; ``card_holder`` 0.80 hold a card; ``wealth_holder`` 0.33 have wealth
    accounts; ``duplicate_core_cif`` 0.02 have a second core CIF (a legacy record from another CUST_NO
    range, ``duplicate_same_id`` 0.85 of them with the same id number, else no id or the old 15-digit id;
    ``duplicate_old_phone`` / ``duplicate_old_address`` 0.40 each carry a stale phone / address).
Cross references
    ``card_core_cif`` 0.85 / ``wealth_core_cif`` 0.90 of card / wealth records carry ``core_cif``
    (``core_cif_points_to_duplicate`` 0.30 of them point at the duplicate CIF when there is one).
Variation between systems
    ``card_pinyin_name`` 0.40 of card records write the name in pinyin ("Zhang" / "Wei", often upper case);
    ``name_typo`` 0.03 of people have a typo in one record (latin letter swapped/dropped/replaced, or a
    similar-looking / same-sounding CJK character); per record ``missing_email`` 0.10, ``missing_phone``
    0.05, ``missing_id_number`` 0.05 (card/wealth only); ``changed_phone`` 0.08 and ``old_address`` 0.15 of
    people have the old value in one record (that record is also the older one by ``updated_at``);
    ``transposed_birth_date`` 0.01 of people whose day and month are both <= 12 (and differ) have them
    swapped in one record; ``upper_case_email`` 0.05 of records; phones in the formats the platform
    normalises ("13812345678", "138 1234 5678", "138-1234-5678", "+86 138 1234 5678", "0086 13812345678",
    "+8613812345678", full-width digits; mixes differ per system); ``card_short_city`` 0.20 of card records
    write "北京" for "北京市"; ``address_with_city`` 0.10 of card/wealth addresses start with the city;
    ``lower_case_id_x`` 0.30 of records write a final "X" check character as "x".
Identifiers
    CN resident ids with GB 11643 check character, region code and birth date embedded, 17th digit odd for
    men; ``passport_holder`` 0.03 of people have a PASSPORT instead (``foreign_passport_holder`` 0.40 of
    those are foreigners with latin names written "FAMILY GIVEN"); card PANs are 16-digit Luhn-valid with
    UnionPay (62), Visa (4) and Mastercard (5) BINs, 30 % written in groups of four.
Noise
    ``invalid_id_checksum`` 0.005 of people have one mistyped id digit in one record; per record
    placeholders ``placeholder_phone`` 0.003 ("13800000000"), ``placeholder_email`` 0.003
    ("test@test.com"), ``placeholder_id`` 0.001 ("000000000000000000"); one branch phone per
    ``customers_per_branch_phone`` 50,000 people (at least one), each written in the core record of
    ``branch_phone_customers`` 30 unrelated people; ``household_member`` 0.05 of people live with another
    person (same address and postcode; ``household_shares_phone`` 0.30 also share the phone,
    ``household_shares_email`` 0.25 a family email; at most 3 people per household), always with a
    different name and birth date: different persons in the ground truth. Common names (张伟, 王芳 ...) are
    frequent, as in life.
Hard cases (per card / wealth record)
    ``probabilistic_only`` 0.010: no deterministic rule links the record (no core_cif, no id, no phone,
    a typo in the name) but birth date + similar name + email and postcode still match its person: for
    the probabilistic tier. ``unlinkable`` 0.002: only the name (pinyin in cards, a typo in wealth) and
    the birth date remain (no core_cif, id, phone or email, an old address): genuinely hard.

Hard mode (``mode="hard"``: `HARD_RATES` and `HardRates`)
-------------------------------------------------------
Closer to real bank files. More households (``household_member`` 0.15), sharing the phone (0.60) and the e-mail
(0.50) more often: parents and grown-up children, spouses. ``twins`` 0.02: the next person is a twin of the one
before (same family name, birth date, address, phone and e-mail; another given name and id number).
``no_common_identifiers`` 0.30 of people with more than one record share no CIF, id number, phone or e-mail
between their core record and the others: ``legacy_id_on_core`` 0.70 of those born before 1982 have the
15-digit id in core and its 18-digit form in one other system; the others have no id or a mistyped one; a
passport holder's other record has a renewed passport (another number); one other record may have the old
phone, the rest none; an e-mail elsewhere is another address or missing. Their non-core records also carry
errors: ``pinyin`` 0.60 of Chinese names in pinyin (pypinyin, upper or capitalised), ``name_typo`` 0.30,
``birth_date_error`` 0.15 (day and month transposed, the year one off, or missing), ``address_variant`` 0.40
(with the city, without the district, "6-2-704" for "6栋2单元704", full-width digits), ``missing_address`` 0.10
(and half of those no postcode). The truth is ``truth.csv``, ``source,customer_key,entity``, the format
`evaluate_identity` reads; the guarantees below hold for the other people only (twins break the second one on
purpose).

Guarantees
----------
- Every other card / wealth / duplicate core record of a person is connected to the person's core record
  by the deterministic rules (same valid id of one type; core_cif = CUST_NO; phone + birth date; email +
  name key; name key + birth date + postcode), except the two hard-case kinds above: when the variation
  leaves a record unconnected, its core_cif (or for a duplicate CIF its id number) is restored.
- The deterministic rules never connect two different people, except through the deliberately shared
  identifiers (branch phones, placeholders, family emails), which the platform suppresses or which need
  a name that differs: every rule key of every record is checked against a bit filter of the keys of all
  people generated before, and a person whose keys collide is generated again.
"""
from __future__ import annotations

import csv
import hashlib
import math
import random
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

from pypinyin import Style, lazy_pinyin

__all__ = [
    "CARD_FILE", "CARD_HEADER", "CORE_FILE", "CORE_HEADER", "FeedRates", "GROUND_TRUTH_FILE",
    "GROUND_TRUTH_HEADER", "HARD_RATES", "HARD_TRUTH_FILE", "HARD_TRUTH_HEADER", "HardRates", "MODES", "ID_TYPE_CN",
    "ID_TYPE_PASSPORT", "PLACEHOLDER_EMAIL", "PLACEHOLDER_ID", "PLACEHOLDER_PHONE", "SOURCE_CARD", "SOURCE_CORE", "SOURCE_WEALTH", "WEALTH_FILE", "WEALTH_HEADER",
    "cn_id_check_char", "generate_sample_feeds", "is_valid_cn_id", "luhn_check_digit", "luhn_valid",
]


@dataclass(frozen=True)
class FeedRates:
    """Every rate of the generator; see the module docstring for what each one means."""

    card_holder: float = 0.80
    wealth_holder: float = 0.33
    duplicate_core_cif: float = 0.02
    duplicate_same_id: float = 0.85
    duplicate_old_phone: float = 0.40
    duplicate_old_address: float = 0.40
    card_core_cif: float = 0.85
    wealth_core_cif: float = 0.90
    core_cif_points_to_duplicate: float = 0.30
    card_pinyin_name: float = 0.40
    name_typo: float = 0.03
    missing_email: float = 0.10
    missing_phone: float = 0.05
    missing_id_number: float = 0.05
    changed_phone: float = 0.08
    old_address: float = 0.15
    transposed_birth_date: float = 0.01
    upper_case_email: float = 0.05
    card_short_city: float = 0.20
    address_with_city: float = 0.10
    lower_case_id_x: float = 0.30
    passport_holder: float = 0.03
    foreign_passport_holder: float = 0.40
    invalid_id_checksum: float = 0.005
    placeholder_phone: float = 0.003
    placeholder_email: float = 0.003
    placeholder_id: float = 0.001
    branch_phone_customers: int = 30
    customers_per_branch_phone: int = 50_000
    household_member: float = 0.05
    household_shares_phone: float = 0.30
    household_shares_email: float = 0.25
    probabilistic_only: float = 0.010
    unlinkable: float = 0.002


DEFAULT_RATES = FeedRates()
MODES = ("default", "hard")

SOURCE_CORE, SOURCE_CARD, SOURCE_WEALTH = "core", "card", "wealth"
CORE_FILE, CARD_FILE, WEALTH_FILE = "core_customers.csv", "card_customers.csv", "wealth_customers.csv"
GROUND_TRUTH_FILE = "ground_truth.csv"
_CANONICAL = ("gender", "birth_date", "id_type", "id_number", "phone", "email", "address", "city", "postcode")
CORE_HEADER = ("CUST_NO", "full_name", *_CANONICAL, "updated_at")
CARD_HEADER = ("customer_key", "family_name", "given_name", *_CANONICAL, "core_cif", "pan", "credit_limit",
               "card_status", "updated_at")
WEALTH_HEADER = ("customer_key", "full_name", *_CANONICAL, "core_cif", "risk_level", "risk_assessed_at",
                 "updated_at")
GROUND_TRUTH_HEADER = ("source", "customer_key", "person_id")

ID_TYPE_CN = "CN_RESIDENT"
ID_TYPE_PASSPORT = "PASSPORT"
PLACEHOLDER_PHONE = "13800000000"
PLACEHOLDER_EMAIL = "test@test.com"
PLACEHOLDER_ID = "000000000000000000"

REFERENCE_DATE = date(2026, 3, 31)  # "today" of the extract: nothing is dated after it

# --- identifiers -------------------------------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_id_check_char(first17: str) -> str:
    """GB 11643 check character for the first 17 digits of a resident id number."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def is_valid_cn_id(value: str) -> bool:
    """18 characters, 17 digits and the right check character (case-insensitive x)."""
    value = value.strip().upper()
    return len(value) == 18 and value[:17].isdigit() and cn_id_check_char(value[:17]) == value[17]


def luhn_check_digit(body: str) -> str:
    total = 0
    for k, ch in enumerate(reversed(body)):
        d = ord(ch) - 48
        if not k & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str(-total % 10)


def luhn_valid(number: str) -> bool:
    digits = "".join(ch for ch in number if ch.isdigit())
    return len(digits) >= 12 and luhn_check_digit(digits[:-1]) == digits[-1]


# --- reference tables --------------------------------------------------------------------------------------

# (city, weight, ((district, postcode, region code), ...))
CITIES = (
    ("北京市", 10, (("朝阳区", "100020", "110105"), ("海淀区", "100080", "110108"), ("东城区", "100010", "110101"),
                  ("西城区", "100032", "110102"), ("丰台区", "100071", "110106"))),
    ("上海市", 10, (("浦东新区", "200120", "310115"), ("徐汇区", "200030", "310104"), ("长宁区", "200050", "310105"),
                  ("静安区", "200040", "310106"), ("闵行区", "201100", "310112"))),
    ("广州市", 7, (("天河区", "510630", "440106"), ("越秀区", "510030", "440104"), ("海珠区", "510220", "440105"),
                 ("白云区", "510405", "440111"))),
    ("深圳市", 7, (("南山区", "518052", "440305"), ("福田区", "518033", "440304"), ("罗湖区", "518001", "440303"),
                 ("宝安区", "518101", "440306"))),
    ("杭州市", 5, (("西湖区", "310012", "330106"), ("上城区", "310002", "330102"), ("拱墅区", "310011", "330105"),
                 ("滨江区", "310051", "330108"))),
    ("南京市", 4, (("鼓楼区", "210008", "320106"), ("玄武区", "210018", "320102"), ("秦淮区", "210001", "320104"),
                 ("建邺区", "210019", "320105"))),
    ("成都市", 5, (("武侯区", "610041", "510107"), ("锦江区", "610021", "510104"), ("青羊区", "610031", "510105"),
                 ("成华区", "610051", "510108"))),
    ("武汉市", 4, (("武昌区", "430061", "420106"), ("江岸区", "430010", "420102"), ("洪山区", "430070", "420111"))),
    ("西安市", 3, (("雁塔区", "710061", "610113"), ("碑林区", "710001", "610103"), ("未央区", "710016", "610112"))),
    ("重庆市", 5, (("渝中区", "400010", "500103"), ("江北区", "400020", "500105"), ("渝北区", "401120", "500112"))),
    ("天津市", 4, (("和平区", "300041", "120101"), ("河西区", "300202", "120103"), ("南开区", "300100", "120104"))),
    ("苏州市", 3, (("姑苏区", "215008", "320508"), ("虎丘区", "215011", "320505"), ("吴中区", "215128", "320506"))),
    ("青岛市", 2, (("市南区", "266001", "370202"), ("崂山区", "266100", "370212"), ("市北区", "266011", "370203"))),
    ("大连市", 2, (("中山区", "116001", "210202"), ("沙河口区", "116021", "210204"))),
    ("长沙市", 2, (("天心区", "410004", "430103"), ("岳麓区", "410006", "430104"), ("芙蓉区", "410011", "430102"))),
    ("郑州市", 2, (("金水区", "450003", "410105"), ("二七区", "450052", "410103"))),
    ("济南市", 2, (("历下区", "250011", "370102"), ("市中区", "250001", "370103"))),
    ("厦门市", 2, (("思明区", "361001", "350203"), ("湖里区", "361006", "350206"))),
    ("福州市", 2, (("鼓楼区", "350001", "350102"), ("台江区", "350004", "350103"))),
    ("合肥市", 2, (("蜀山区", "230031", "340104"), ("庐阳区", "230001", "340103"))),
    ("宁波市", 2, (("海曙区", "315000", "330203"), ("鄞州区", "315100", "330212"))),
    ("无锡市", 2, (("梁溪区", "214000", "320213"), ("滨湖区", "214071", "320211"))),
    ("沈阳市", 2, (("和平区", "110001", "210102"), ("沈河区", "110011", "210103"))),
    ("哈尔滨市", 1, (("道里区", "150010", "230102"), ("南岗区", "150006", "230103"))),
    ("长春市", 1, (("南关区", "130022", "220102"), ("朝阳区", "130012", "220104"))),
    ("石家庄市", 1, (("长安区", "050011", "130102"), ("桥西区", "050051", "130104"))),
    ("太原市", 1, (("小店区", "030032", "140105"), ("迎泽区", "030002", "140106"))),
    ("昆明市", 1, (("五华区", "650021", "530102"), ("盘龙区", "650051", "530103"))),
    ("南昌市", 1, (("东湖区", "330006", "360102"), ("西湖区", "330009", "360103"))),
    ("贵阳市", 1, (("南明区", "550001", "520102"), ("云岩区", "550003", "520103"))),
    ("南宁市", 1, (("青秀区", "530022", "450103"), ("兴宁区", "530023", "450102"))),
    ("兰州市", 1, (("城关区", "730030", "620102"),)),
    ("乌鲁木齐市", 1, (("天山区", "830002", "650102"),)),
    ("海口市", 1, (("龙华区", "570105", "460106"),)),
)
# Birthplaces outside the big cities (county-level region codes).
RURAL_REGION_CODES = (
    "130425", "341221", "411522", "510922", "430523", "370923", "320982", "421381", "350581", "410325",
    "622424", "522422", "452122", "362421", "612525", "142625", "231121", "653121", "440823", "330324",
)
STREETS = (
    "建国路", "人民路", "解放路", "中山路", "长江路", "和平路", "新华路", "胜利路", "文化路", "东风路", "青年路",
    "光明路", "学府路", "花园路", "友谊路", "振兴路", "滨江路", "幸福路", "迎宾大道", "世纪大道", "科技路", "工业路",
    "健康路", "团结路", "朝阳路", "五一路", "八一路", "延安路", "黄河路", "湖滨路",
)
ESTATES = (
    "阳光花园", "幸福家园", "金色家园", "翠苑小区", "锦绣华庭", "万科城", "碧桂园", "世纪花园", "绿地新都会", "保利花园",
    "恒大名都", "龙湖春江", "中海国际", "华润置地", "融创壹号院", "富力城", "金地格林", "桃源小区", "和平里", "工人新村",
)

# (surname, pinyin, weight per 10,000)
SURNAMES = (
    ("王", "Wang", 710), ("李", "Li", 700), ("张", "Zhang", 670), ("刘", "Liu", 540), ("陈", "Chen", 450),
    ("杨", "Yang", 310), ("黄", "Huang", 220), ("赵", "Zhao", 220), ("吴", "Wu", 200), ("周", "Zhou", 190),
    ("徐", "Xu", 170), ("孙", "Sun", 150), ("马", "Ma", 150), ("朱", "Zhu", 140), ("胡", "Hu", 130),
    ("郭", "Guo", 110), ("何", "He", 110), ("高", "Gao", 100), ("林", "Lin", 100), ("罗", "Luo", 90),
    ("郑", "Zheng", 90), ("梁", "Liang", 80), ("谢", "Xie", 80), ("宋", "Song", 70), ("唐", "Tang", 70),
    ("许", "Xu", 60), ("韩", "Han", 60), ("冯", "Feng", 60), ("邓", "Deng", 60), ("曹", "Cao", 60),
    ("彭", "Peng", 50), ("曾", "Zeng", 50), ("肖", "Xiao", 50), ("田", "Tian", 50), ("董", "Dong", 50),
    ("袁", "Yuan", 50), ("潘", "Pan", 40), ("于", "Yu", 40), ("蒋", "Jiang", 40), ("蔡", "Cai", 40),
    ("余", "Yu", 40), ("杜", "Du", 40), ("叶", "Ye", 40), ("程", "Cheng", 40), ("苏", "Su", 40),
    ("魏", "Wei", 40), ("吕", "Lv", 40), ("丁", "Ding", 40), ("任", "Ren", 40), ("沈", "Shen", 40),
    ("姚", "Yao", 30), ("卢", "Lu", 30), ("姜", "Jiang", 30), ("崔", "Cui", 30), ("钟", "Zhong", 30),
    ("谭", "Tan", 30), ("陆", "Lu", 30), ("汪", "Wang", 30), ("范", "Fan", 30), ("金", "Jin", 30),
    ("石", "Shi", 30), ("廖", "Liao", 30), ("贾", "Jia", 30), ("夏", "Xia", 30), ("韦", "Wei", 30),
    ("付", "Fu", 30), ("方", "Fang", 30), ("白", "Bai", 20), ("邹", "Zou", 20), ("孟", "Meng", 20),
    ("熊", "Xiong", 20), ("秦", "Qin", 20), ("邱", "Qiu", 20), ("江", "Jiang", 20), ("尹", "Yin", 20),
    ("薛", "Xue", 20), ("闫", "Yan", 20), ("段", "Duan", 20), ("雷", "Lei", 20), ("侯", "Hou", 20),
    ("龙", "Long", 20), ("史", "Shi", 20), ("欧阳", "Ouyang", 8), ("上官", "Shangguan", 2), ("司马", "Sima", 2),
)
# Given-name characters with their pinyin. Whole given names below are drawn by frequency (most common
# first), the rest are two characters combined at random.
MALE_CHARS = {
    "伟": "Wei", "强": "Qiang", "磊": "Lei", "军": "Jun", "洋": "Yang", "勇": "Yong", "杰": "Jie", "涛": "Tao",
    "明": "Ming", "超": "Chao", "刚": "Gang", "平": "Ping", "辉": "Hui", "鹏": "Peng", "华": "Hua", "飞": "Fei",
    "鑫": "Xin", "波": "Bo", "斌": "Bin", "宇": "Yu", "浩": "Hao", "凯": "Kai", "健": "Jian", "俊": "Jun",
    "帆": "Fan", "旭": "Xu", "宁": "Ning", "龙": "Long", "林": "Lin", "志": "Zhi", "国": "Guo", "建": "Jian",
    "文": "Wen", "东": "Dong", "海": "Hai", "晨": "Chen", "博": "Bo", "子": "Zi", "轩": "Xuan", "泽": "Ze",
    "睿": "Rui", "天": "Tian", "成": "Cheng", "嘉": "Jia", "振": "Zhen", "家": "Jia", "阳": "Yang", "瑞": "Rui",
    "晓": "Xiao", "永": "Yong", "德": "De", "立": "Li", "新": "Xin", "鸿": "Hong", "毅": "Yi", "峰": "Feng",
    "亮": "Liang", "昊": "Hao", "然": "Ran", "钧": "Jun", "佑": "You", "鸣": "Ming", "豪": "Hao", "航": "Hang",
    "一": "Yi",
}
FEMALE_CHARS = {
    "芳": "Fang", "娜": "Na", "敏": "Min", "静": "Jing", "丽": "Li", "艳": "Yan", "娟": "Juan", "霞": "Xia",
    "秀": "Xiu", "英": "Ying", "兰": "Lan", "桂": "Gui", "玲": "Ling", "燕": "Yan", "红": "Hong", "婷": "Ting",
    "雪": "Xue", "慧": "Hui", "琳": "Lin", "晶": "Jing", "欣": "Xin", "颖": "Ying", "佳": "Jia", "倩": "Qian",
    "洁": "Jie", "梅": "Mei", "萍": "Ping", "莉": "Li", "丹": "Dan", "璐": "Lu", "美": "Mei", "晓": "Xiao",
    "雨": "Yu", "怡": "Yi", "梓": "Zi", "诗": "Shi", "思": "Si", "雅": "Ya", "琪": "Qi", "悦": "Yue", "月": "Yue",
    "涵": "Han", "瑶": "Yao", "薇": "Wei", "玉": "Yu", "春": "Chun", "文": "Wen", "淑": "Shu", "珍": "Zhen",
    "婉": "Wan", "海": "Hai", "子": "Zi", "一": "Yi", "诺": "Nuo",
}
MALE_GIVEN = (
    "伟", "强", "磊", "军", "洋", "勇", "杰", "涛", "明", "超", "刚", "平", "辉", "鹏", "华", "飞", "鑫", "波", "斌",
    "宇", "浩", "凯", "健", "俊", "帆", "旭", "宁", "龙", "林", "建国", "建华", "志强", "国强", "海涛", "晓东", "文博",
    "子轩", "浩然", "宇航", "俊杰", "博文", "明轩", "天佑", "志明", "建军", "永强", "晓明", "家豪", "一鸣",
)
FEMALE_GIVEN = (
    "芳", "娜", "敏", "静", "丽", "艳", "娟", "霞", "秀英", "秀兰", "桂英", "玲", "燕", "红", "婷", "雪", "慧", "琳",
    "晶", "欣", "颖", "佳", "倩", "洁", "梅", "萍", "莉", "丹", "璐", "玉兰", "丽娟", "晓燕", "雨涵", "欣怡", "梓涵",
    "诗涵", "思雨", "雅琪", "佳怡", "子涵", "美玲", "海燕", "春梅", "丽华", "淑珍", "婉婷", "晓丽", "一诺",
)
# Same-sounding or similar-looking characters: what a typist or an input method gets wrong.
SIMILAR_CHARS = {
    "王": "汪", "汪": "王", "张": "章", "李": "季", "刘": "浏", "陈": "陳", "杨": "扬", "黄": "簧", "赵": "照",
    "吴": "吳", "周": "州", "徐": "许", "许": "徐", "马": "玛", "朱": "珠", "胡": "湖", "郭": "廓", "何": "河",
    "林": "琳", "罗": "萝", "郑": "鄭", "梁": "粱", "谢": "榭", "宋": "送", "唐": "塘", "韩": "寒", "冯": "凤",
    "伟": "玮", "强": "墙", "磊": "垒", "军": "君", "洋": "阳", "勇": "永", "杰": "洁", "涛": "韬", "明": "铭",
    "超": "潮", "刚": "钢", "平": "萍", "辉": "晖", "鹏": "朋", "华": "桦", "飞": "菲", "鑫": "新", "波": "博",
    "斌": "彬", "宇": "雨", "浩": "皓", "凯": "恺", "健": "建", "俊": "峻", "帆": "凡", "旭": "煦", "宁": "凝",
    "龙": "隆", "志": "智", "国": "果", "建": "健", "文": "雯", "东": "冬", "海": "每", "晨": "辰", "博": "搏",
    "子": "梓", "轩": "萱", "泽": "则", "睿": "锐", "天": "添", "成": "诚", "嘉": "佳", "振": "震", "家": "佳",
    "阳": "洋", "瑞": "锐", "晓": "小", "永": "勇", "德": "得", "立": "力", "新": "欣", "鸿": "宏", "毅": "义",
    "峰": "锋", "亮": "靓", "昊": "浩", "然": "燃", "钧": "均", "佑": "右", "鸣": "铭", "豪": "毫", "航": "杭",
    "一": "壹", "芳": "方", "娜": "那", "敏": "民", "静": "婧", "丽": "莉", "艳": "燕", "娟": "鹃", "霞": "侠",
    "秀": "绣", "英": "瑛", "兰": "岚", "桂": "贵", "玲": "铃", "燕": "艳", "红": "虹", "婷": "亭", "雪": "学",
    "慧": "惠", "琳": "林", "晶": "京", "欣": "新", "颖": "影", "佳": "家", "倩": "茜", "洁": "杰", "梅": "玫",
    "萍": "平", "莉": "丽", "丹": "单", "璐": "路", "美": "媚", "雨": "宇", "怡": "仪", "梓": "子", "诗": "施",
    "思": "丝", "雅": "亚", "琪": "琦", "悦": "阅", "月": "悦", "涵": "函", "瑶": "遥", "薇": "微", "玉": "钰",
    "春": "椿", "淑": "叔", "珍": "真", "婉": "碗", "诺": "喏",
}
FOREIGN_FAMILY = (
    "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "MILLER", "DAVIS", "WILSON", "TAYLOR", "ANDERSON",
    "THOMAS", "MARTIN", "LEE", "KIM", "PARK", "NGUYEN", "TANAKA", "SUZUKI", "SATO", "BERNARD", "DUBOIS",
    "SCHMIDT", "SCHNEIDER", "FISCHER", "ROSSI", "GARCIA", "MARTINEZ", "LOPEZ", "IVANOV", "PETROV", "SINGH",
    "KUMAR", "KHAN", "TAN", "LIM", "WONG", "CHAN", "NG", "MUELLER", "COHEN",
)
FOREIGN_MALE = (
    "JAMES", "JOHN", "ROBERT", "MICHAEL", "DAVID", "WILLIAM", "RICHARD", "THOMAS", "DANIEL", "PAUL", "MARK",
    "PETER", "ANDREW", "KEVIN", "HIROSHI", "KENJI", "MINJUN", "RAJ", "LUCAS", "ALEXANDER", "PIERRE", "MARCO",
)
FOREIGN_FEMALE = (
    "MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "SUSAN", "JESSICA", "SARAH", "KAREN", "EMMA",
    "OLIVIA", "SOPHIE", "ANNA", "MARIA", "YUKI", "HANA", "JIWOO", "PRIYA", "CLAIRE", "GIULIA", "NATALIA",
)

PHONE_PREFIXES = (
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "150", "151", "152", "153", "155",
    "156", "157", "158", "159", "166", "176", "177", "178", "180", "181", "182", "183", "185", "186", "187",
    "188", "189", "199",
)
# (BIN, weight): UnionPay, Visa and Mastercard credit-card BINs of Chinese issuers.
CARD_BINS = (
    ("622588", 14), ("625809", 10), ("628288", 8), ("622155", 8), ("625967", 8), ("622689", 6),
    ("438088", 6), ("427020", 5), ("404117", 5), ("456351", 4),
    ("518710", 6), ("524047", 5), ("552534", 4), ("545947", 4),
)
EMAIL_DOMAINS = (
    ("163.com", 30), ("126.com", 12), ("sina.com", 8), ("gmail.com", 10), ("hotmail.com", 6),
    ("foxmail.com", 8), ("outlook.com", 8), ("sohu.com", 4), ("yeah.net", 3), ("aliyun.com", 3),
)
_KEYBOARD = {
    "a": "sqz", "b": "vn", "c": "xv", "d": "sf", "e": "wr", "f": "dg", "g": "fh", "h": "gj", "i": "uo",
    "j": "hk", "k": "jl", "l": "k", "m": "n", "n": "bm", "o": "ip", "p": "o", "q": "wa", "r": "et", "s": "ad",
    "t": "ry", "u": "yi", "v": "cb", "w": "qe", "x": "zc", "y": "tu", "z": "x",
}
_FULL_WIDTH = str.maketrans("0123456789+", "０１２３４５６７８９＋")
_NAME_JUNK = re.compile(r"[\W_]+")


def name_key(value: str) -> str:
    """Case-folded, without spaces or punctuation; CJK characters as written."""
    return _NAME_JUNK.sub("", value.casefold())


def _expand(pairs) -> tuple:
    """[(item, weight), ...] -> a tuple holding each item `weight` times, for O(1) weighted draws."""
    return tuple(item for item, weight in pairs for _ in range(weight))


def _zipf(items, exponent: float = 0.9, scale: int = 400) -> tuple:
    return _expand((item, max(1, round(scale / (rank + 1) ** exponent))) for rank, item in enumerate(items))


# Weighted pools, built once.
_CITY_POOL = _expand((k, c[1]) for k, c in enumerate(CITIES))
_ALL_DISTRICTS = tuple((ci, di) for ci, c in enumerate(CITIES) for di in range(len(c[2])))
_SURNAME_POOL = _expand(((s, p), w) for s, p, w in SURNAMES)
_MALE_WHOLE = _zipf(MALE_GIVEN)
_FEMALE_WHOLE = _zipf(FEMALE_GIVEN)
_MALE_CHAR_LIST = tuple(MALE_CHARS)
_FEMALE_CHAR_LIST = tuple(FEMALE_CHARS)
_BIN_POOL = _expand(CARD_BINS)
_DOMAIN_POOL = _expand(EMAIL_DOMAINS)
_CREDIT_LIMITS = _expand(((10_000, 8), (20_000, 12), (30_000, 14), (50_000, 18), (60_000, 6), (80_000, 10),
                          (100_000, 12), (120_000, 4), (150_000, 6), (200_000, 5)))
_CARD_STATUS = _expand((("ACTIVE", 90), ("BLOCKED", 4), ("CLOSED", 6)))
_RISK_LEVELS = _expand((("C1", 10), ("C2", 25), ("C3", 35), ("C4", 20), ("C5", 10)))
# Phone formats: 0 plain, 1 spaced, 2 dashed, 3 "+86 138 1234 5678", 4 "0086 1381...", 5 "+86138...", 6 full width.
_PHONE_FORMATS = {
    SOURCE_CORE: _expand(((0, 70), (1, 10), (2, 8), (3, 5), (4, 3), (5, 3), (6, 1))),
    SOURCE_CARD: _expand(((0, 40), (1, 10), (2, 5), (3, 20), (4, 10), (5, 14), (6, 1))),
    SOURCE_WEALTH: _expand(((0, 60), (1, 15), (2, 10), (3, 5), (4, 3), (5, 5), (6, 2))),
}
_CITY_SHORT = {c[0]: c[0][:-1] for c in CITIES}

_REF_ORD = REFERENCE_DATE.toordinal()
_ORD_2010 = date(2010, 1, 1).toordinal()
_DATE_ISO: dict[int, str] = {}
_DATE_ID_SUM: dict[int, int] = {}
_SEQ_ID_SUM = tuple(sum(int(c) * w for c, w in zip(f"{s:03d}", _ID_WEIGHTS[14:])) for s in range(1000))


def _iso(ordinal: int) -> str:
    s = _DATE_ISO.get(ordinal)
    if s is None:
        s = _DATE_ISO[ordinal] = date.fromordinal(ordinal).isoformat()
    return s


def _region_sum(region: str) -> int:
    return sum(int(c) * w for c, w in zip(region, _ID_WEIGHTS[:6]))


_REGION_SUM: dict[str, int] = {}


class _AffinePermutation:
    """x -> (a x + b) mod m: a bijection of [0, m), so distinct inputs give distinct identifiers."""

    def __init__(self, m: int, rng: random.Random):
        a = int(m * 0.6180339887) | 1
        while math.gcd(a, m) != 1:
            a += 2
        self.a, self.b, self.m = a, rng.randrange(m), m

    def __call__(self, x: int) -> int:
        return (self.a * x + self.b) % self.m


class _SeenFilter:
    """A two-hash bit filter of rule keys already used by earlier people (no false negatives)."""

    def __init__(self, people: int):
        bits = 1 << max(20, (people * 192).bit_length())
        self.mask = bits - 1
        self.bits = bytearray(bits >> 3)

    def _positions(self, key: str) -> tuple[int, int]:
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
        return h & self.mask, (h >> 32) & self.mask

    def hit(self, positions) -> bool:
        bits = self.bits
        a, b = positions
        return bool(bits[a >> 3] & (1 << (a & 7))) and bool(bits[b >> 3] & (1 << (b & 7)))

    def add(self, positions) -> None:
        bits = self.bits
        for p in positions:
            bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key: str) -> bool:
        return self.hit(self._positions(key))

    def add_key(self, key: str) -> None:
        self.add(self._positions(key))


class _Person:
    __slots__ = (
        "index", "pid", "male", "cjk", "family", "given", "family_latin", "given_latin", "bd", "id_type",
        "id_number", "legacy_id", "phone", "old_phone", "email", "email_is_family", "address", "old_address",
        "head", "branch_phone",
    )


class _Address:
    __slots__ = ("city", "district", "postcode", "street_part")

    def __init__(self, city: str, district: str, postcode: str, street_part: str):
        self.city, self.district, self.postcode, self.street_part = city, district, postcode, street_part

    def line(self, with_city: bool = False) -> str:
        return (self.city if with_city else "") + self.district + self.street_part


class _Household:
    __slots__ = ("address", "phone", "email", "surname", "bd", "name_keys", "members", "email_sharers")


class _Generator:
    truth_file, truth_header = GROUND_TRUTH_FILE, GROUND_TRUTH_HEADER

    def __init__(self, customers: int, seed: int, rates: FeedRates):
        self.n = customers
        self.rates = rates
        self.rng = rng = random.Random(seed)
        self.rnd = rng.random
        self.phone_perm = _AffinePermutation(len(PHONE_PREFIXES) * 10**8, rng)
        self.passport_perm = _AffinePermutation(10**8, rng)
        self.qq_perm = _AffinePermutation(9 * 10**8, rng)
        self.pan_perm = _AffinePermutation(10**9, rng)
        self.seen = _SeenFilter(customers)
        n_branch = max(1, customers // max(1, rates.customers_per_branch_phone))
        self.branch_phones = [self._mobile(3 * j + 2) for j in range(n_branch)]
        chosen = rng.sample(range(customers), min(customers, n_branch * rates.branch_phone_customers))
        self.branch_of = {p: self.branch_phones[k % n_branch] for k, p in enumerate(chosen)}
        self.households: list[_Household] = []
        self.household_cursor = 0
        self.next_cif = 1_000_000_000 + rng.randrange(100_000)
        self.next_legacy_cif = 6_000_000_000 + rng.randrange(100_000)
        self.next_card = 1_000_000 + rng.randrange(100_000)
        self.next_wealth = 100_000 + rng.randrange(10_000)
        self.stats = {k: 0 for k in (
            "people", "regenerated", "repaired", "probabilistic_only", "unlinkable", "invalid_id_checksum",
            "household_members", "branch_phone_records", "duplicate_core_cif",
        )}

    # --- small helpers ---------------------------------------------------------------------------------

    def pick(self, seq):
        return seq[int(self.rnd() * len(seq))]

    def _mobile(self, x: int) -> str:
        y = self.phone_perm(x)
        number = PHONE_PREFIXES[y // 100_000_000] + f"{y % 100_000_000:08d}"
        return number if number != PLACEHOLDER_PHONE else "13800000001"

    def _format_phone(self, number: str, source: str) -> str:
        style = self.pick(_PHONE_FORMATS[source])
        if style == 0:
            return number
        if style == 1:
            return f"{number[:3]} {number[3:7]} {number[7:]}"
        if style == 2:
            return f"{number[:3]}-{number[3:7]}-{number[7:]}"
        if style == 3:
            return f"+86 {number[:3]} {number[3:7]} {number[7:]}"
        if style == 4:
            return "0086 " + number
        if style == 5:
            return "+86" + number
        return number.translate(_FULL_WIDTH)

    def _new_address(self, avoid_postcode: str | None = None, city_index: int | None = None) -> _Address:
        rnd, pick = self.rnd, self.pick
        while True:
            ci = city_index if city_index is not None else pick(_CITY_POOL)
            city, _, districts = CITIES[ci]
            district, postcode, _ = pick(districts)
            if postcode != avoid_postcode:
                break
            city_index = None  # the only district of that city: move to another city
        floor = 1 + int(rnd() * rnd() * 30)
        room = f"{floor}{1 + int(rnd() * 4):02d}"
        unit = 1 + int(rnd() * 6)
        style = rnd()
        if style < 0.40:
            part = f"{pick(STREETS)}{1 + int(rnd() * 300)}号{unit}单元{room}"
        elif style < 0.75:
            part = f"{pick(STREETS)}{1 + int(rnd() * 300)}号{pick(ESTATES)}{1 + int(rnd() * 30)}栋{unit}单元{room}"
        else:
            part = f"{pick(ESTATES)}{1 + int(rnd() * 30)}号楼{unit}单元{room}"
        return _Address(city, district, postcode, part)

    def _cn_id(self, region: str, bd_ord: int, male: bool) -> str:
        date8 = _iso(bd_ord).replace("-", "")
        dsum = _DATE_ID_SUM.get(bd_ord)
        if dsum is None:
            dsum = _DATE_ID_SUM[bd_ord] = sum(int(c) * w for c, w in zip(date8, _ID_WEIGHTS[6:14]))
        rsum = _REGION_SUM.get(region)
        if rsum is None:
            rsum = _REGION_SUM[region] = _region_sum(region)
        seen = self.seen
        for _ in range(50):
            seq = int(self.rnd() * 500) * 2 + (1 if male else 0)
            number = f"{region}{date8}{seq:03d}" + _ID_CHECK[(rsum + dsum + _SEQ_ID_SUM[seq]) % 11]
            if f"1|{ID_TYPE_CN}|{number}" not in seen:
                return number
        return number

    def _email(self, p: _Person) -> str:
        rnd, pick = self.rnd, self.pick
        u = rnd()
        if p.cjk and u < 0.30:
            return f"{100_000_000 + self.qq_perm(p.index)}@qq.com"
        if p.cjk and u < 0.35:
            return f"{p.phone}@139.com"
        fam = "".join(p.family_latin).lower()
        giv = "".join(p.given_latin).lower()
        style = rnd()
        if style < 0.45:
            local = fam + giv
        elif style < 0.65:
            local = f"{giv}.{fam}"
        elif style < 0.80:
            local = f"{fam}_{giv}"
        else:
            local = "".join(s[0] for s in p.family_latin + p.given_latin).lower()
        bd = _iso(p.bd)
        style = rnd()
        if style < 0.25:
            local += bd[:4]
        elif style < 0.45:
            local += bd[2:4]
        elif style < 0.55:
            local += bd[5:7] + bd[8:10]
        elif style < 0.85:
            local += str(int(rnd() * 10 ** (2 + int(rnd() * 3))))
        domain = pick(_DOMAIN_POOL)
        email = f"{local}@{domain}"
        while "e|" + email in self.seen:
            local += str(int(rnd() * 10))
            email = f"{local}@{domain}"
        return email

    # --- a person and their records -----------------------------------------------------------------------

    def _household_head(self) -> _Household | None:
        if not self.households or self.rnd() >= self.rates.household_member:
            return None
        head = self.pick(self.households)
        return head if head.members < 3 else None

    def _new_person(self, index: int) -> _Person:
        rnd, pick, r = self.rnd, self.pick, self.rates
        p = _Person()
        p.index = index
        p.pid = f"P{index + 1:08d}"
        p.male = male = rnd() < 0.5
        passport = rnd() < r.passport_holder
        foreign = passport and rnd() < r.foreign_passport_holder
        p.head = head = self._household_head()
        p.cjk = not foreign
        taken = head.name_keys if head is not None else ()
        while True:
            if foreign:
                family = pick(FOREIGN_FAMILY)
                given = pick(FOREIGN_MALE if male else FOREIGN_FEMALE)
                p.family, p.given = family, given
                p.family_latin, p.given_latin = (family.capitalize(),), (given.capitalize(),)
            else:
                if head is not None and head.surname and rnd() < 0.5:
                    family, family_py = head.surname
                else:
                    family, family_py = pick(_SURNAME_POOL)
                if rnd() < 0.55:
                    given = pick(_MALE_WHOLE if male else _FEMALE_WHOLE)
                else:
                    chars = _MALE_CHAR_LIST if male else _FEMALE_CHAR_LIST
                    given = pick(chars) + pick(chars)
                table = MALE_CHARS if male else FEMALE_CHARS
                p.family, p.given = family, given
                p.family_latin = (family_py,)
                p.given_latin = tuple(table.get(ch) or MALE_CHARS.get(ch) or FEMALE_CHARS[ch] for ch in given)
            if name_key(p.family + p.given) not in taken:
                break
        # Birth date: adults, most between 25 and 60; a household member is a spouse or a grown-up child.
        while True:
            if head is not None and rnd() < 0.5 and head.bd < _REF_ORD - 38 * 365:
                bd = head.bd + int((20 + rnd() * 15) * 365.25)
            elif head is not None:
                bd = head.bd + int((rnd() * 12 - 6) * 365.25)
            else:
                a = (rnd() + rnd() + rnd()) / 3
                bd = _REF_ORD - int((18 + 66 * a ** 1.3) * 365.25) - int(rnd() * 365)
            bd = min(bd, _REF_ORD - 18 * 366)
            if head is None or bd != head.bd:
                break
        p.bd = bd
        # Where they live, where they were born.
        p.address = head.address if head is not None else self._new_address()
        p.old_address = None
        if foreign:
            p.id_type = ID_TYPE_PASSPORT
            p.id_number = pick("GKPXY") + f"{self.passport_perm(index):08d}"
            p.legacy_id = None
        elif passport:
            p.id_type = ID_TYPE_PASSPORT
            p.id_number = "E" + f"{self.passport_perm(index):08d}"
            p.legacy_id = None
        else:
            u = rnd()
            if u < 0.55:
                region = next(d[2] for d in CITIES[_city_index(p.address.city)][2] if d[0] == p.address.district)
            elif u < 0.80:
                ci, di = pick(_ALL_DISTRICTS)
                region = CITIES[ci][2][di][2]
            else:
                region = pick(RURAL_REGION_CODES)
            p.id_type = ID_TYPE_CN
            p.id_number = self._cn_id(region, bd, male)
            # First-generation ids (before 1999): 15 digits, two-digit year, no check character.
            p.legacy_id = p.id_number[:6] + p.id_number[8:17] if bd < date(1982, 1, 1).toordinal() else None
        p.phone = head.phone if head is not None and rnd() < r.household_shares_phone else self._mobile(3 * index)
        p.old_phone = self._mobile(3 * index + 1)
        p.branch_phone = self.branch_of.get(index)
        p.email_is_family = (head is not None and head.email is not None and head.email_sharers < 3
                             and rnd() < r.household_shares_email)
        p.email = head.email if p.email_is_family else self._email(p)
        return p

    def _display_name(self, p: _Person, source: str) -> tuple[str, str, bool]:
        """(family, given, latin) as `source` writes them."""
        if not p.cjk:
            if source == SOURCE_CARD and self.rnd() < 0.3:
                return p.family.capitalize(), p.given.capitalize(), True
            return p.family, p.given, True
        if source == SOURCE_CARD and self.rnd() < self.rates.card_pinyin_name:
            style = self.rnd()
            fam = p.family_latin[0]
            if style < 0.45:
                return fam, "".join(p.given_latin).capitalize(), True
            if style < 0.85:
                return fam.upper(), "".join(p.given_latin).upper(), True
            if style < 0.95:
                return fam.upper(), " ".join(p.given_latin).upper(), True
            return fam, " ".join(p.given_latin), True
        return p.family, p.given, False

    def _record(self, p: _Person, source: str, key: str) -> dict:
        rnd, r = self.rnd, self.rates
        family, given, latin = self._display_name(p, source)
        id_number = p.id_number
        if id_number[-1] == "X" and rnd() < r.lower_case_id_x:
            id_number = id_number[:-1] + "x"
        email = p.email
        if rnd() < r.upper_case_email:
            email = email.upper() if rnd() < 0.6 else email[:1].upper() + email[1:]
        address = p.address
        return {
            "source": source, "key": key, "family": family, "given": given, "latin": latin,
            "bd": _iso(p.bd), "id_type": p.id_type, "id_number": id_number,
            "id_usable": p.id_type + "|" + p.id_number,
            "phone_n": p.phone, "phone": self._format_phone(p.phone, source),
            "email_n": p.email, "email": email,
            "addr": address, "with_city": source != SOURCE_CORE and rnd() < r.address_with_city,
            "short_city": source == SOURCE_CARD and rnd() < r.card_short_city,
            "cif": "", "stale": False,
        }

    @staticmethod
    def _set_phone_missing(rec: dict) -> None:
        rec["phone"] = ""
        rec["phone_n"] = None

    @staticmethod
    def _set_id_missing(rec: dict) -> None:
        rec["id_type"] = rec["id_number"] = ""
        rec["id_usable"] = None

    def _typo(self, rec: dict) -> bool:
        """A typo in the record's name; False when the name offers none."""
        if rec["latin"]:
            field = "given" if self.rnd() < 0.8 else "family"
            changed = _latin_typo(rec[field], self.rnd)
            if changed is None:
                field = "family" if field == "given" else "given"
                changed = _latin_typo(rec[field], self.rnd)
            if changed is None:
                return False
            rec[field] = changed
            return True
        for field in ("given", "family") if self.rnd() < 0.85 else ("family", "given"):
            value = rec[field]
            spots = [k for k, ch in enumerate(value) if ch in SIMILAR_CHARS]
            if spots:
                k = self.pick(spots)
                rec[field] = value[:k] + SIMILAR_CHARS[value[k]] + value[k + 1:]
                return True
        return False

    def _person_records(self, p: _Person) -> list[dict]:
        rnd, pick, r = self.rnd, self.pick, self.rates
        core = self._record(p, SOURCE_CORE, str(self.next_cif))
        recs = [core]
        if rnd() < r.duplicate_core_cif:
            dup = self._record(p, SOURCE_CORE, str(self.next_legacy_cif))
            dup["legacy"] = True
            dup["stale"] = True
            u = rnd()
            if u >= r.duplicate_same_id:
                if p.legacy_id and rnd() < 0.5:
                    dup["id_number"] = p.legacy_id
                    dup["id_usable"] = None
                else:
                    self._set_id_missing(dup)
            if rnd() < r.duplicate_old_phone:
                dup["phone_n"] = p.old_phone
                dup["phone"] = self._format_phone(p.old_phone, SOURCE_CORE)
            if rnd() < r.duplicate_old_address:
                dup["addr"] = p.old_address = self._new_address(p.address.postcode)
            recs.append(dup)
        if rnd() < r.card_holder:
            recs.append(self._record(p, SOURCE_CARD, f"CC{self.next_card:010d}"))
        if rnd() < r.wealth_holder:
            recs.append(self._record(p, SOURCE_WEALTH, f"W{self.next_wealth:09d}"))
        n = len(recs)
        dup = recs[1] if n > 1 and recs[1].get("legacy") else None
        for rec in recs:
            if rec["source"] != SOURCE_CORE:
                share = r.card_core_cif if rec["source"] == SOURCE_CARD else r.wealth_core_cif
                if rnd() < share:
                    rec["cif"] = dup["key"] if dup is not None and rnd() < r.core_cif_points_to_duplicate else core["key"]

        # Variation in one system (a random one of the person's records).
        if rnd() < r.changed_phone:
            rec = pick(recs)
            rec["phone_n"] = p.old_phone
            rec["phone"] = self._format_phone(p.old_phone, rec["source"])
            rec["stale"] = True
        if rnd() < r.old_address:
            rec = pick(recs)
            if p.old_address is None:
                p.old_address = self._new_address(
                    p.address.postcode, _city_index(p.address.city) if rnd() < 0.7 else None)
            rec["addr"] = p.old_address
            rec["stale"] = True
        day, month = (b := _iso(p.bd))[8:10], b[5:7]
        if day <= "12" and day != month and rnd() < r.transposed_birth_date:
            pick(recs)["bd"] = f"{b[:4]}-{day}-{month}"
        if rnd() < r.name_typo:
            self._typo(pick(recs))
        if p.id_type == ID_TYPE_CN and rnd() < r.invalid_id_checksum:
            candidates = [rec for rec in recs if len(rec["id_number"]) == 18]
            if candidates:
                rec = pick(candidates)
                number = rec["id_number"]
                k = int(rnd() * 17)
                digit = str((int(number[k]) + 1 + int(rnd() * 9)) % 10)
                rec["id_number"] = number[:k] + digit + number[k + 1:]
                rec["id_usable"] = None
                self.stats["invalid_id_checksum"] += 1

        # Per-record gaps and noise.
        for rec in recs:
            if rnd() < r.missing_email:
                rec["email"] = ""
                rec["email_n"] = None
            elif rnd() < r.placeholder_email:
                rec["email"] = PLACEHOLDER_EMAIL
                rec["email_n"] = None
            if rnd() < r.missing_phone:
                self._set_phone_missing(rec)
            elif rnd() < r.placeholder_phone:
                rec["phone"] = PLACEHOLDER_PHONE if rnd() < 0.7 else "138 0000 0000"
                rec["phone_n"] = None
            if rec["source"] != SOURCE_CORE and rnd() < r.missing_id_number:
                self._set_id_missing(rec)
            elif rnd() < r.placeholder_id:
                rec["id_type"] = ID_TYPE_CN
                rec["id_number"] = PLACEHOLDER_ID
                rec["id_usable"] = None
        if p.branch_phone is not None:
            core["phone"] = self._format_phone(p.branch_phone, SOURCE_CORE)
            core["phone_n"] = None  # shared by ~30 people: the platform suppresses it
            self.stats["branch_phone_records"] += 1

        # Hard cases, then make sure everything else hangs together.
        for rec in recs[1:]:
            if rec["source"] == SOURCE_CORE:
                continue
            u = rnd()
            if u < r.probabilistic_only:
                self._make_probabilistic_only(p, rec)
            elif u < r.probabilistic_only + r.unlinkable:
                self._make_unlinkable(p, rec)
        for rec in recs:
            rec["nk"] = name_key(rec["family"] + rec["given"])
        self._connect(recs)
        return recs

    def _make_probabilistic_only(self, p: _Person, rec: dict) -> None:
        """No rule links it, but birth date + similar name + email + postcode still point at its person."""
        family, given, latin = (p.family, p.given, not p.cjk)
        rec.update(family=family, given=given, latin=latin, cif="", bd=_iso(p.bd), addr=p.address, hard="prob")
        if not self._typo(rec):
            rec["given"] += rec["given"][-1]
        self._set_id_missing(rec)
        self._set_phone_missing(rec)
        rec["email"] = rec["email_n"] = p.email

    def _make_unlinkable(self, p: _Person, rec: dict) -> None:
        """Only the name (pinyin or with a typo) and the birth date are left."""
        rec.update(cif="", bd=_iso(p.bd), hard="none", email="", email_n=None)
        self._set_id_missing(rec)
        self._set_phone_missing(rec)
        if not rec["latin"] and not self._typo(rec):
            rec["given"] += rec["given"][-1]
        if p.old_address is None:
            p.old_address = self._new_address(p.address.postcode)
        rec["addr"] = p.old_address
        rec["stale"] = True

    def _connect(self, recs: list[dict]) -> None:
        """Restore core_cif (or the id of a duplicate CIF) of a record no rule connects to the core record."""
        for _ in range(2):
            keysets = [_rule_keys(rec) for rec in recs]
            for rec, keys in zip(recs, keysets):
                keys.append("2|" + (rec["key"] if rec["source"] == SOURCE_CORE else rec["cif"]))
            connected = _connected_to_first(keysets)
            todo = [rec for rec, ok in zip(recs[1:], connected[1:]) if not ok and "hard" not in rec]
            if not todo:
                return
            core = recs[0]
            for rec in todo:
                self.stats["repaired"] += 1
                if rec["source"] != SOURCE_CORE:
                    rec["cif"] = core["key"]
                elif core["id_usable"] is not None:
                    rec.update(id_type=core["id_type"], id_number=core["id_number"], id_usable=core["id_usable"])
                else:
                    rec.update(family=core["family"], given=core["given"], nk=core["nk"], bd=core["bd"],
                               addr=core["addr"])

    def _commit_keys(self, p: _Person, recs: list[dict]) -> bool:
        """False when a rule key of these records was used by an earlier person; else remember them all."""
        seen = self.seen
        keys = dict.fromkeys(k for rec in recs for k in _rule_keys(rec))
        positions = [seen._positions(k) for k in keys]
        if any(seen.hit(pos) for pos in positions):
            return False
        for pos in positions:
            seen.add(pos)
        if not p.email_is_family:
            seen.add_key("e|" + p.email)
        return True

    # --- output -----------------------------------------------------------------------------------------

    def _updated_at(self, recs: list[dict]) -> None:
        rnd = self.rnd
        windows = {SOURCE_CORE: date(2016, 1, 1).toordinal(), SOURCE_CARD: date(2019, 1, 1).toordinal(),
                   SOURCE_WEALTH: date(2020, 6, 1).toordinal()}
        for rec in recs:
            start = date(2011, 1, 1).toordinal() if rec.get("legacy") else windows[rec["source"]]
            end = date(2018, 12, 31).toordinal() if rec.get("legacy") else _REF_ORD - 1
            rec["day"] = start + int(rnd() * (end - start))
        fresh = [rec["day"] for rec in recs if not rec["stale"]]
        if fresh:
            oldest_fresh = min(fresh)
            for rec in recs:
                if rec["stale"] and rec["day"] >= oldest_fresh:
                    rec["day"] = max(_ORD_2010, oldest_fresh - 30 - int(rnd() * 1200))
        for rec in recs:
            secs = int((8 + rnd() * 13) * 3600)
            rec["updated_at"] = f"{_iso(rec['day'])}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"

    def run(self, out_dir: Path) -> dict[str, int]:
        out_dir.mkdir(parents=True, exist_ok=True)
        counts = {CORE_FILE: 0, CARD_FILE: 0, WEALTH_FILE: 0, self.truth_file: 0}
        rnd, pick = self.rnd, self.pick
        files = {name: open(out_dir / name, "w", encoding="utf-8", newline="", buffering=1 << 20)
                 for name in counts}
        try:
            writers = {name: csv.writer(fh, lineterminator="\n") for name, fh in files.items()}
            writers[CORE_FILE].writerow(CORE_HEADER)
            writers[CARD_FILE].writerow(CARD_HEADER)
            writers[WEALTH_FILE].writerow(WEALTH_HEADER)
            writers[self.truth_file].writerow(self.truth_header)
            core_w, card_w, wealth_w, truth_w = (writers[CORE_FILE].writerow, writers[CARD_FILE].writerow,
                                                 writers[WEALTH_FILE].writerow, writers[self.truth_file].writerow)
            for index in range(self.n):
                for _attempt in range(25):
                    p = self._new_person(index)
                    recs = self._person_records(p)
                    if self._commit_keys(p, recs):
                        break
                    self.stats["regenerated"] += 1
                self._remember_household(p)
                self._updated_at(recs)
                self.stats["people"] += 1
                self.stats["household_members"] += p.head is not None
                for rec in recs:
                    source = rec["source"]
                    hard = rec.get("hard")
                    if hard == "prob":
                        self.stats["probabilistic_only"] += 1
                    elif hard == "none":
                        self.stats["unlinkable"] += 1
                    addr = rec["addr"]
                    city = _CITY_SHORT[addr.city] if rec["short_city"] else addr.city
                    line = rec["address_text"] if "address_text" in rec else addr.line(rec["with_city"])
                    common = (rec["bd"] and ("M" if p.male else "F"), rec["bd"], rec["id_type"], rec["id_number"],
                              rec["phone"], rec["email"], line, city, rec.get("postcode", addr.postcode))
                    if source == SOURCE_CORE:
                        core_w((rec["key"], _full_name(rec), *common, rec["updated_at"]))
                        if rec.get("legacy"):
                            self.next_legacy_cif += 1 + (rnd() < 0.2)
                            self.stats["duplicate_core_cif"] += 1
                        else:
                            self.next_cif += 1 + (rnd() < 0.15)
                        counts[CORE_FILE] += 1
                    elif source == SOURCE_CARD:
                        bin_ = pick(_BIN_POOL)
                        body = f"{bin_}{self.pan_perm(index):09d}"
                        pan = body + luhn_check_digit(body)
                        if rnd() < 0.3:
                            pan = f"{pan[:4]} {pan[4:8]} {pan[8:12]} {pan[12:]}"
                        card_w((rec["key"], rec["family"], rec["given"], *common, rec["cif"], pan,
                                pick(_CREDIT_LIMITS), pick(_CARD_STATUS), rec["updated_at"]))
                        self.next_card += 1 + (rnd() < 0.1)
                        counts[CARD_FILE] += 1
                    else:
                        assessed = max(date(2018, 1, 1).toordinal(), rec["day"] - int(rnd() * 1000))
                        wealth_w((rec["key"], _full_name(rec), *common, rec["cif"], pick(_RISK_LEVELS),
                                  _iso(assessed), rec["updated_at"]))
                        self.next_wealth += 1 + (rnd() < 0.1)
                        counts[WEALTH_FILE] += 1
                    truth_w((source, rec["key"], p.pid))
                    counts[self.truth_file] += 1
        finally:
            for fh in files.values():
                fh.close()
        return counts

    def _remember_household(self, p: _Person) -> None:
        head = p.head
        if head is not None:
            head.members += 1
            head.name_keys = (*head.name_keys, name_key(p.family + p.given))
            if p.email_is_family:
                head.email_sharers += 1
            return
        h = _Household()
        h.address, h.phone, h.email, h.bd = p.address, p.phone, p.email, p.bd
        h.surname = (p.family, p.family_latin[0]) if p.cjk else None
        h.name_keys = (name_key(p.family + p.given),)
        h.members = 1
        h.email_sharers = 1
        if len(self.households) < 4096:
            self.households.append(h)
        else:
            self.households[self.household_cursor] = h
            self.household_cursor = (self.household_cursor + 1) % 4096


@dataclass(frozen=True)
class HardRates:
    """The hard mode's own rates; see the module docstring."""

    no_common_identifiers: float = 0.30
    twins: float = 0.02
    legacy_id_on_core: float = 0.70
    pinyin: float = 0.60
    name_typo: float = 0.30
    birth_date_error: float = 0.15
    address_variant: float = 0.40
    missing_address: float = 0.10


# Hard mode: more households, sharing their contact data more often; more passports and legacy CIFs.
HARD_RATES = FeedRates(household_member=0.15, household_shares_phone=0.60, household_shares_email=0.50,
                       passport_holder=0.06, duplicate_core_cif=0.04, name_typo=0.05, transposed_birth_date=0.02)
HARD_TRUTH_FILE = "truth.csv"
HARD_TRUTH_HEADER = ("source", "customer_key", "entity")
_ESTATE_BLOCK = re.compile(r"(\d+)(?:号楼|栋)(\d+)单元(\d+)")


@lru_cache(maxsize=4096)
def _pinyin(text: str) -> str:
    """Toneless pinyin of Chinese characters, as pypinyin (the platform's transliteration library) writes it."""
    return "".join(lazy_pinyin(text, style=Style.NORMAL))


class _HardGenerator(_Generator):
    """The default generator plus people who share no identifier across systems and carry the errors of real
    files, and twins who share everything but their given name and id number."""

    truth_file, truth_header = HARD_TRUTH_FILE, HARD_TRUTH_HEADER

    def __init__(self, customers: int, seed: int, rates: FeedRates, hard: HardRates = HardRates()):
        super().__init__(customers, seed, rates)
        self.hard = hard
        self.stats.update(no_common_identifiers=0, twins=0)
        self._previous: _Person | None = None
        self._twin = self._no_common = False

    def _new_person(self, index: int) -> _Person:
        p = super()._new_person(index)
        sibling = self._previous
        self._twin = (sibling is not None and sibling.cjk and sibling.head is None and p.head is None
                      and self.rnd() < self.hard.twins)
        if self._twin:
            self._make_twin(p, sibling)
        return p

    def _make_twin(self, p: _Person, sibling: _Person) -> None:
        """Same family name, birth date, address, phone and e-mail as the person before; another given name."""
        rnd, pick = self.rnd, self.pick
        while True:
            chars = _MALE_CHAR_LIST if p.male else _FEMALE_CHAR_LIST
            given = pick(_MALE_WHOLE if p.male else _FEMALE_WHOLE) if rnd() < 0.55 else pick(chars) + pick(chars)
            if name_key(given) != name_key(sibling.given):
                break
        table = MALE_CHARS if p.male else FEMALE_CHARS
        p.family, p.family_latin, p.given = sibling.family, sibling.family_latin, given
        p.given_latin = tuple(table.get(ch) or MALE_CHARS.get(ch) or FEMALE_CHARS[ch] for ch in given)
        p.cjk, p.bd, p.address, p.phone, p.email = True, sibling.bd, sibling.address, sibling.phone, sibling.email
        p.email_is_family = True
        region = sibling.id_number[:6] if sibling.id_type == ID_TYPE_CN else pick(RURAL_REGION_CODES)
        p.id_type, p.id_number = ID_TYPE_CN, self._cn_id(region, p.bd, p.male)
        p.legacy_id = p.id_number[:6] + p.id_number[8:17] if p.bd < date(1982, 1, 1).toordinal() else None

    def _person_records(self, p: _Person) -> list[dict]:
        self._no_common = self.rnd() < self.hard.no_common_identifiers
        recs = super()._person_records(p)
        if self._no_common and len(recs) > 1:
            for rec in recs[1:]:
                rec["hard"] = "no common identifier"
            self._share_nothing(p, recs)
            for rec in recs[1:]:
                self._real_errors(p, rec)
                rec["nk"] = name_key(rec["family"] + rec["given"])
        return recs

    def _connect(self, recs: list[dict]) -> None:
        if not self._no_common:
            super()._connect(recs)

    def _commit_keys(self, p: _Person, recs: list[dict]) -> bool:
        if not self._twin:
            return super()._commit_keys(p, recs)
        # Twins share the phone + birth date key on purpose: it is what a naive rule would merge them on.
        for key in dict.fromkeys(k for rec in recs for k in _rule_keys(rec)):
            self.seen.add_key(key)
        return True

    def _remember_household(self, p: _Person) -> None:
        super()._remember_household(p)
        self._previous = p
        self.stats["twins"] += self._twin
        self.stats["no_common_identifiers"] += self._no_common

    def _share_nothing(self, p: _Person, recs: list[dict]) -> None:
        """No CIF, id number, phone or e-mail in common between the core record and the others."""
        rnd, pick = self.rnd, self.pick
        core, others = recs[0], recs[1:]
        keep_id = None
        if p.id_type == ID_TYPE_CN and p.legacy_id and rnd() < self.hard.legacy_id_on_core:
            # An old core record holds the 15-digit id; one other system has the 18-digit form of it.
            core["id_number"], core["id_usable"] = p.legacy_id, None
            keep_id = pick(others)
        renewed = p.id_number[0] + f"{self.passport_perm((p.index + self.n) % 10**8):08d}"
        for k, rec in enumerate(others):
            rec["cif"] = ""
            if p.id_type == ID_TYPE_PASSPORT and k == 0:
                rec.update(id_type=ID_TYPE_PASSPORT, id_number=renewed, id_usable=f"{ID_TYPE_PASSPORT}|{renewed}")
            elif p.id_type == ID_TYPE_CN and rec is keep_id:
                rec.update(id_type=ID_TYPE_CN, id_number=p.id_number, id_usable=None)
            elif p.id_type == ID_TYPE_CN and rnd() < 0.5:
                number = p.id_number
                spot = int(rnd() * 17)
                digit = str((int(number[spot]) + 1 + int(rnd() * 9)) % 10)
                rec.update(id_type=ID_TYPE_CN, id_number=number[:spot] + digit + number[spot + 1:], id_usable=None)
            else:
                self._set_id_missing(rec)
            if k == 0 and rnd() < 0.6:
                rec["phone_n"] = p.old_phone
                rec["phone"] = self._format_phone(p.old_phone, rec["source"])
            else:
                self._set_phone_missing(rec)
            email = self._email(p) if rnd() < 0.4 else None
            if email is None or email == p.email:
                rec["email"], rec["email_n"] = "", None
            else:
                rec["email"] = rec["email_n"] = email

    def _real_errors(self, p: _Person, rec: dict) -> None:
        """Pinyin for Chinese characters, name typos, birth-date slips, addresses written another way, gaps."""
        rnd, h = self.rnd, self.hard
        if p.cjk and not rec["latin"] and rnd() < h.pinyin:
            family, given = _pinyin(rec["family"]), _pinyin(rec["given"])
            upper = rnd() < 0.5
            rec.update(family=family.upper() if upper else family.capitalize(),
                       given=given.upper() if upper else given.capitalize(), latin=True)
        if rnd() < h.name_typo:
            self._typo(rec)
        if rec["bd"] and rnd() < h.birth_date_error:
            bd, u = rec["bd"], rnd()
            if u < 0.4 and bd[8:10] <= "12" and bd[8:10] != bd[5:7]:
                rec["bd"] = f"{bd[:4]}-{bd[8:10]}-{bd[5:7]}"
            elif u < 0.8 and bd[5:10] != "02-29":
                rec["bd"] = f"{int(bd[:4]) + (1 if rnd() < 0.5 else -1)}{bd[4:]}"
            else:
                rec["bd"] = ""
        u = rnd()
        if u < h.missing_address:
            rec["address_text"] = ""
            if rnd() < 0.5:
                rec["postcode"] = ""
        elif u < h.missing_address + h.address_variant:
            rec["address_text"] = self._address_variant(rec["addr"])

    def _address_variant(self, address: _Address) -> str:
        u = self.rnd()
        if u < 0.3:
            return address.city + address.district + address.street_part
        if u < 0.55:
            return address.street_part
        if u < 0.8 and _ESTATE_BLOCK.search(address.street_part):
            return address.district + _ESTATE_BLOCK.sub(r"\1-\2-\3", address.street_part)
        return address.line().translate(_FULL_WIDTH)


def _city_index(city: str, _cache: dict = {}) -> int:  # noqa: B006 - a module-lifetime lookup cache
    if not _cache:
        _cache.update((c[0], k) for k, c in enumerate(CITIES))
    return _cache[city]


def _full_name(rec: dict) -> str:
    return f"{rec['family']} {rec['given']}" if rec["latin"] else rec["family"] + rec["given"]


def _latin_typo(value: str, rnd) -> str | None:
    letters = [k for k, ch in enumerate(value) if ch.isascii() and ch.isalpha()]
    if len(letters) < 3:
        return None
    op = rnd()
    if op < 0.34:
        k = letters[1 + int(rnd() * (len(letters) - 2))]
        if k + 1 < len(value) and value[k + 1].isalpha() and value[k + 1].lower() != value[k].lower():
            return value[:k] + value[k + 1] + value[k] + value[k + 2:]
    if op < 0.67:
        k = letters[1 + int(rnd() * (len(letters) - 1))]
        return value[:k] + value[k + 1:]
    k = letters[1 + int(rnd() * (len(letters) - 1))]
    near = _KEYBOARD[value[k].lower()]
    ch = near[int(rnd() * len(near))]
    return value[:k] + (ch.upper() if value[k].isupper() else ch) + value[k + 1:]


def _rule_keys(rec: dict) -> list[str]:
    """The record's keys under deterministic rules (1), (3), (4), (5), as the platform would build them."""
    keys = []
    bd, nk = rec["bd"], rec["nk"]
    if rec["id_usable"] is not None:
        keys.append("1|" + rec["id_usable"])
    if rec["phone_n"] is not None:
        keys.append(f"3|{rec['phone_n']}|{bd}")
    if rec["email_n"] is not None:
        keys.append(f"4|{rec['email_n'].lower()}|{nk}")
    keys.append(f"5|{nk}|{bd}|{rec['addr'].postcode}")
    return keys


def _connected_to_first(keysets: list[list[str]]) -> list[bool]:
    parent = list(range(len(keysets)))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    first: dict[str, int] = {}
    for i, keys in enumerate(keysets):
        for k in keys:
            j = first.setdefault(k, i)
            if j != i:
                parent[find(i)] = find(j)
    root = find(0)
    return [find(i) == root for i in range(len(keysets))]


def generate_sample_feeds(out_dir: Path | str, customers: int, seed: int, rates: FeedRates | None = None,
                          stats: dict | None = None, *, mode: str = "default") -> dict[str, int]:
    """Write the three source feeds and the ground truth for `customers` people; return rows per file.

    `stats`, when given, is filled with counts of the deliberate cases (people regenerated after a key
    collision, records repaired to stay linkable, probabilistic-only and unlinkable records, ...).
    """
    if customers < 0:
        raise ValueError("customers must be >= 0")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if mode == "hard":
        generator = _HardGenerator(customers, seed, rates or HARD_RATES)
    else:
        generator = _Generator(customers, seed, rates or DEFAULT_RATES)
    counts = generator.run(Path(out_dir))
    if stats is not None:
        stats.update(generator.stats)
    return counts
