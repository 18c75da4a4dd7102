"""Throughput of customer-row normalisation on synthetic rows of realistic content: the row-by-row definition
(profiles.normalize.normalize_customer_row) against the vectorised path the loader runs (profiles.columnar).

Run: .venv/bin/python bench/bench_normalize.py [rows]
"""
import os
import random
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")

from profiles.normalize import normalize_customer_row  # noqa: E402

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
FAMILY = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗欧阳"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂"
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京"]
STREETS = ["建国路", "人民路", "解放大道", "中山路", "长安街", "南京东路"]


def cn_id(born: date, rng: random.Random) -> str:
    body = f"{rng.choice(['110105', '310101', '440106', '330102'])}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _WEIGHTS)) % 11]


def make_rows(n: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        born = date(1950, 1, 1) + timedelta(days=rng.randrange(20000))
        name = rng.choice(FAMILY) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
        mobile = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
        phone = rng.choice((mobile, f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}", "+86" + mobile, f"{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}"))
        rows.append({
            "customer_key": f"C{i:09d}",
            "full_name": name,
            "gender": rng.choice(("M", "F", "男", "女", "")),
            "birth_date": born.isoformat(),
            "id_type": "CN_RESIDENT",
            "id_number": cn_id(born, rng),
            "phone": phone,
            "email": f"user{i}@{rng.choice(('qq.com', '163.com', 'example.com', 'Gmail.com'))}",
            "address": f"{rng.choice(CITIES)}市{rng.choice(STREETS)}{rng.randrange(1, 999)}号",
            "city": rng.choice(CITIES),
            "postcode": f"{rng.randrange(100000, 999999)}",
            "core_cif": "",
            "updated_at": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:00",
        })
    return rows


def best_of_3(run) -> float:
    best = None
    for _ in range(3):
        started = time.perf_counter()
        run()
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    return best


def main() -> None:
    import django
    import pyarrow as pa
    from django.utils import timezone

    django.setup()
    from profiles.columnar import KeyedHasher, normalise_chunk

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rows = make_rows(n)
    normalize_customer_row(rows[0])  # warm-up: settings, caches
    row_by_row = best_of_3(lambda: [normalize_customer_row(row) for row in rows])
    print(f"{n:,} rows, best of 3: row by row {row_by_row:.2f}s = {n / row_by_row:,.0f} rows/s")

    chunk = pa.table({"rn": pa.array(range(1, n + 1), pa.int64()),
                      **{name: pa.array([row[name] for row in rows], pa.string()) for name in rows[0]}})
    hasher, zone = KeyedHasher(), timezone.get_current_timezone_name()
    vectorised = best_of_3(lambda: normalise_chunk(chunk, hasher=hasher, today=date.today(), time_zone=zone))
    print(f"{n:,} rows, best of 3: vectorised {vectorised:.2f}s = {n / vectorised:,.0f} rows/s "
          f"({row_by_row / vectorised:.1f}x)")


if __name__ == "__main__":
    main()
