"""Regenerate data/sample.csv and data/sample.parquet (deterministic; run from the repo root).

1,000 data rows over 5 locations, HighLevel-shaped 20-character IDs, with a few rows an
export really produces: blank IDs, an ID with a slash, an over-long ID, whitespace around an
ID, and repeated (location, contact) pairs.
"""

from __future__ import annotations

import random
import string

import polars as pl

ALPHABET = string.ascii_letters + string.digits


def make_id(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(20))


def main() -> None:
    rng = random.Random(2021_07_28)
    locations = [make_id(rng) for _ in range(5)]
    rows = [(make_id(rng), locations[i % 5]) for i in range(980)]
    rows += [rows[rng.randrange(len(rows))] for _ in range(8)]  # duplicates
    rows += [
        ("", locations[0]),
        ("   ", locations[1]),
        (make_id(rng), ""),
        ("abc/def" + make_id(rng)[:10], locations[2]),
        ("x" * 70, locations[3]),
        ("hello world", locations[4]),
        (make_id(rng), "loc#1"),
        ("  " + make_id(rng) + "  ", locations[0]),
        ("caf\u00e9" + make_id(rng)[:12], locations[1]),
        ("0001234567890123", locations[2]),
        (make_id(rng), locations[3]),
        (make_id(rng), locations[4]),
    ]
    rng.shuffle(rows)
    frame = pl.DataFrame(
        {"contactId": [c for c, _ in rows], "locationId": [loc for _, loc in rows]},
        schema={"contactId": pl.String, "locationId": pl.String},
    )
    frame.write_csv("data/sample.csv")
    frame.write_parquet("data/sample.parquet")
    print(f"{frame.height} rows, {len(locations)} locations")
    export = contacts_export(rng, 300)
    export.write_csv("data/contacts_export.csv")
    print(f"{export.height} rows in a HighLevel-style contacts export (no location column)")


FIRST = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena"]
LAST = ["Okafor", "Silva", "Nguyen", "Schmidt", "Haddad", "Kowalski", "Moreau", "Tanaka", "Reyes"]
TAGS = ["lead", "customer", "webinar-2026", "vip", "newsletter", "cold"]


def contacts_export(rng: random.Random, rows: int) -> pl.DataFrame:
    """What an analyst gets from a sub-account's Contacts > Export: one location, many columns."""
    records = []
    for i in range(rows):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        contact = make_id(rng)
        if i % 47 == 5:
            contact = ""  # a contact row without an id
        elif i % 53 == 7:
            contact = contact[:8] + "/" + contact[9:]  # mangled by a spreadsheet formula
        records.append(
            {
                "Contact Id": contact,
                "First Name": first,
                "Last Name": last,
                "Business Name": rng.choice(["", "", f"{last} & Co"]),
                "Email": f"{first}.{last}{i}@example.com".lower(),
                "Phone": f"+1 555 {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}",
                "Tags": ", ".join(rng.sample(TAGS, rng.randrange(0, 3))),
                "Source": rng.choice(["Website Form", "Facebook Lead", "Import", "Chat Widget"]),
                "Assigned To": rng.choice(["", "Sam Lee", "Priya Shah"]),
                "Created": f"2026-0{rng.randrange(1, 10)}-{rng.randrange(10, 28)}T10:00:00Z",
                "Last Activity": rng.choice(["", "2026-11-01T09:30:00Z"]),
                "DND": rng.choice(["false", "false", "true"]),
            }
        )
    return pl.DataFrame(records)


if __name__ == "__main__":
    main()
