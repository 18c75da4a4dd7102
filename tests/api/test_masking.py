import datetime as dt

import pytest

from privacy.policy import mask_address, mask_birth_date, mask_fields, mask_given_name
from profiles.normalize import mask_email, mask_id_number, mask_name, mask_phone


@pytest.mark.parametrize("mask,value,expected", [
    (mask_phone, "+8613912875634", "139****5634"),
    (mask_name, "张伟", "张*"),
    (mask_name, "欧阳娜娜", "欧***"),
    (mask_given_name, "伟", "*"),
    (mask_given_name, "Wei", "W**"),
    (mask_id_number, "110105198001011238", "110***********1238"),
    (mask_email, "zhang.wei@example.com", "z*******@example.com"),
    (mask_address, "北京市朝阳区建国路88号", "北京市朝****"),
    (mask_address, "上海市浦东新区世纪大道1000号金茂大厦", "上海市浦东新****"),
    (mask_address, "ab", "****"),
    (mask_birth_date, dt.date(1985, 3, 7), "1985-**-**"),
    (mask_birth_date, "1985-03-07", "1985-**-**"),
])
def test_masks(mask, value, expected):
    assert mask(value) == expected


def test_mask_fields_leaves_empty_values_and_other_fields():
    data = {"full_name": "张伟", "phone": None, "email": "", "city": "北京市", "id_number_masked": "110***1238"}
    assert mask_fields(data) == {"full_name": "张*", "phone": None, "email": "", "city": "北京市",
                                 "id_number_masked": "110***1238"}
