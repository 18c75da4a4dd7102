"""Sample activity for the people of the sample customer feeds: accounts and transactions (monthly salaries,
spending, a share drifting to dormant), card spending with seasonality, wealth holdings, risk assessments and FX
rates. Deterministic for a seed; dates run up to `today` so the metrics show every lifecycle stage."""
import csv
import random
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from .sample_data import luhn_check_digit

ACTIVITY_FILES = {
    "fx_rates": ("core", "fx_rates.csv", ["currency", "rate_to_cny", "as_of"]),
    "accounts": ("core", "core_accounts.csv", ["account_key", "customer_key", "product_type", "currency", "balance",
                                               "opened_at", "closed_at", "status", "as_of"]),
    "transactions": ("core", "core_transactions.csv", ["txn_key", "customer_key", "account_key", "occurred_at",
                                                       "amount", "currency", "kind", "channel",
                                                       "counterparty_category"]),
    "card_transactions": ("card", "card_transactions.csv", ["txn_key", "customer_key", "card_token", "pan",
                                                            "occurred_at", "amount", "currency", "mcc",
                                                            "merchant_category", "channel", "installment"]),
    "holdings": ("wealth", "wealth_holdings.csv", ["holding_key", "customer_key", "product_code", "product_type",
                                                   "market_value", "currency", "as_of"]),
    "risk_assessments": ("wealth", "wealth_risk_assessments.csv", ["customer_key", "risk_level", "assessed_at",
                                                                   "expires_at"]),
}
RATES = {"USD": 7.10, "HKD": 0.91, "EUR": 7.75}
MERCHANTS = (("dining", "5812", 60, 300), ("retail", "5311", 30, 600), ("travel", "4511", 800, 6000),
             ("groceries", "5411", 40, 400), ("fuel", "5541", 200, 500), ("online", "5999", 20, 900))
# Spring Festival (Jan/Feb) and Golden Week (Oct) spend more.
SEASON = {1: 1.5, 2: 1.4, 10: 1.3, 11: 1.2}
MONTHS = 12
TZ = ZoneInfo("Asia/Shanghai")


def _keys(path: Path) -> list[str]:
    """The customer keys of a sample customer feed: its first column (core's export calls it CUST_NO)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh)
        next(rows)
        return list(dict.fromkeys(row[0] for row in rows))


def _stamp(day: date, rnd: random.Random) -> str:
    return datetime.combine(day, time(rnd.randrange(8, 22), rnd.randrange(60)), TZ).isoformat()


def generate_sample_activity(*, out_dir: Path | str, seed: int, today: date) -> dict[str, int]:
    """Write the activity files next to the customer feeds in `out_dir`; returns rows written per kind."""
    out_dir = Path(out_dir)
    rnd = random.Random(seed)
    counts = dict.fromkeys(ACTIVITY_FILES, 0)
    files = {kind: open(out_dir / name, "w", encoding="utf-8", newline="")
             for kind, (_source, name, _header) in ACTIVITY_FILES.items()}
    try:
        write = {}
        for kind, (_source, _name, header) in ACTIVITY_FILES.items():
            writer = csv.writer(files[kind], lineterminator="\n")
            writer.writerow(header)
            write[kind] = writer.writerow

        def emit(kind: str, *row) -> None:
            write[kind](row)
            counts[kind] += 1

        for months_ago in range(MONTHS, -1, -1):
            day = (today.replace(day=1) - timedelta(days=30 * months_ago)).replace(day=1)
            for currency, rate in RATES.items():
                emit("fx_rates", currency, f"{rate * (1 + rnd.uniform(-0.02, 0.02)):.6f}", day.isoformat())

        for n, key in enumerate(_keys(out_dir / "core_customers.csv")):
            # A tenth drift to dormant: their last own activity is 7 to 11 months ago.
            dormant_since = today - timedelta(days=rnd.randrange(210, 330)) if rnd.random() < 0.10 else None
            new_customer = rnd.random() < 0.05
            opened = today - timedelta(days=rnd.randrange(20, 80) if new_customer else rnd.randrange(400, 5000))
            savings = f"S{n}"
            emit("accounts", savings, key, "savings", "CNY", f"{rnd.lognormvariate(10.5, 1.2):.2f}",
                 opened.isoformat(), "", "active", today.isoformat())
            if rnd.random() < 0.15:
                emit("accounts", f"T{n}", key, "time_deposit", rnd.choice(["CNY", "CNY", "USD"]),
                     f"{rnd.lognormvariate(11, 1):.2f}", (opened + timedelta(days=30)).isoformat(), "", "active",
                     today.isoformat())
            if rnd.random() < 0.10:
                emit("accounts", f"M{n}", key, "mortgage", "CNY", f"{rnd.uniform(2e5, 3e6):.2f}",
                     opened.isoformat(), "", "active", today.isoformat())
            if rnd.random() < 0.04:
                closed = today - timedelta(days=rnd.randrange(10, 80))
                emit("accounts", f"X{n}", key, "current", "CNY", "0.00", opened.isoformat(), closed.isoformat(),
                     "closed", today.isoformat())
            salary = rnd.choice([0, 0, 6000, 9000, 12000, 18000, 30000])
            start = max(opened, today - timedelta(days=30 * MONTHS))
            day, t = start, 0
            while day <= today:
                stopped = dormant_since is not None and day >= dormant_since
                if salary and day.day == 10 and not stopped:
                    emit("transactions", f"{key}-{t}", key, savings, _stamp(day, rnd), f"{salary:.2f}", "CNY",
                         "salary_credit", "system", "employer")
                    t += 1
                if not stopped and rnd.random() < 0.12:
                    emit("transactions", f"{key}-{t}", key, savings, _stamp(day, rnd),
                         f"{-rnd.uniform(20, 3000):.2f}", "CNY", rnd.choice(["payment", "transfer_out"]),
                         rnd.choice(["app", "app", "online", "atm", "branch"]), rnd.choice(["utilities", "retail",
                                                                                             "family", "rent"]))
                    t += 1
                day += timedelta(days=1)

        for n, key in enumerate(_keys(out_dir / "card_customers.csv")):
            token = f"tok-{key}"
            body = f"62258{n:010d}"
            pan = body + luhn_check_digit(body)
            quiet = rnd.random() < 0.15
            for months_ago in range(MONTHS, -1, -1):
                month_start = today - timedelta(days=30 * months_ago + 29)
                season = SEASON.get(month_start.month, 1.0)
                purchases = 0 if quiet and months_ago < 7 else int(rnd.randrange(0, 9) * season)
                for i in range(purchases):
                    day = month_start + timedelta(days=rnd.randrange(30))
                    if day > today:
                        continue
                    category, mcc, low, high = rnd.choice(MERCHANTS)
                    amount = rnd.uniform(low, high) * (-1 if rnd.random() < 0.02 else 1)  # a refund now and then
                    # Some card systems send the number itself: it is tokenised on load, never stored.
                    card = ("", pan) if rnd.random() < 0.3 else (token, "")
                    emit("card_transactions", f"{key}-{months_ago}-{i}", key, *card, _stamp(day, rnd),
                         f"{amount:.2f}", "CNY" if category != "travel" or rnd.random() < 0.7 else "USD", mcc,
                         category, rnd.choice(["pos", "online", "app"]), "3" if amount > 3000 else "")

        for n, key in enumerate(_keys(out_dir / "wealth_customers.csv")):
            for h in range(rnd.randrange(1, 4)):
                product_type = rnd.choice(["fund", "fund", "insurance", "bond", "structured", "deposit_like"])
                emit("holdings", f"H{n}-{h}", key, f"{product_type[:2].upper()}{rnd.randrange(100, 999)}",
                     product_type, f"{rnd.lognormvariate(11.5, 1.1):.2f}", "CNY", today.isoformat())
            assessed = today - timedelta(days=rnd.randrange(30, 700))
            emit("risk_assessments", key, f"C{rnd.randrange(1, 6)}", assessed.isoformat(),
                 (assessed + timedelta(days=730)).isoformat())
    finally:
        for fh in files.values():
            fh.close()
    return counts
