"""A realistic, seeded sample of the five agencies' registers for the demo and benchmarks.

Persons get valid GB 11643 numbers, companies valid GB 32100 codes, all in Yushui District
(360502) and its neighbours. Some records deliberately disagree across agencies (a tax
registration naming another legal representative, a social-insurance address out of date):
that is what reconciliation (Art. 20) is for.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from govbus.core.identifiers import USCC_ALPHABET, resident_id_check_char, uscc_check_char

SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢"
            "宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程")
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰文辉鹏燕婷"
STREETS = ["仙来东大道", "仙来西大道", "劳动北路", "胜利南路", "抱石大道", "赣西大道", "北湖西路",
           "团结西路", "沿江路", "新欣北大道", "袁河大道", "渝东大道"]
TOWNS = ["城北街道", "城南街道", "袁河街道", "新钢街道", "珠珊镇", "罗坊镇", "水西镇", "良山镇"]
DIVISIONS = ["360502"] * 8 + ["360521", "360503"]  # Yushui; Fenyi; Xiannühu
TRADES = ["钢铁", "光伏", "锂电", "物流", "建材", "食品", "纺织", "医药", "农业科技", "商贸"]
WORDS = ["赣西", "仙女湖", "袁河", "渝州", "百丈", "蒙山", "新钢", "抱石", "昌坊", "凯宏"]
TAX_OFFICES = ["国家税务总局新余市渝水区税务局", "国家税务总局新余市渝水区税务局城北税务分局"]


@dataclass
class Sample:
    """Rows per resource id, ready for ``Change.from_json``; plus the deliberate conflicts."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)


def resident_id(rng: random.Random, division: str) -> tuple[str, dt.date]:
    born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(365 * 65))
    body = f"{division}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return body + resident_id_check_char(body), born


def uscc(rng: random.Random, division: str) -> str:
    org = "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    body = f"91{division}{org}"
    return body + uscc_check_char(body)


def address(rng: random.Random) -> str:
    return (f"江西省新余市渝水区{rng.choice(TOWNS)}{rng.choice(STREETS)}"
            f"{rng.randrange(1, 999)}号")


def person(rng: random.Random) -> dict[str, Any]:
    division = rng.choice(DIVISIONS)
    rid, born = resident_id(rng, division)
    return {"resident_id": rid,
            "name": rng.choice(SURNAMES) + "".join(rng.choice(GIVEN)
                                                   for _ in range(rng.choice((1, 2)))),
            "gender": "M" if int(rid[16]) % 2 else "F", "birth_date": born.isoformat(),
            "ethnicity": rng.choice(["汉"] * 9 + ["畲"]), "residence_address": address(rng),
            "household_division": division,
            "phone": f"1{rng.choice('3578')}{rng.randrange(10**9):09d}"}


def company(rng: random.Random, rep: dict[str, Any]) -> dict[str, Any]:
    return {"uscc": uscc(rng, "360502"),
            "name": f"新余市{rng.choice(WORDS)}{rng.choice(TRADES)}有限公司",
            "legal_representative": rep["name"], "legal_representative_id": rep["resident_id"],
            "registered_address": address(rng),
            "registered_capital": rng.randrange(10, 5000) * 10000,
            "established_date": (dt.date(1995, 1, 1) + dt.timedelta(
                days=rng.randrange(365 * 30))).isoformat(),
            "status": rng.choice(["ACTIVE"] * 18 + ["REVOKED", "CANCELLED"])}


def generate(events: int = 3000, seed: int = 2018) -> Sample:
    """About ``events`` rows across the six resources, reproducible from ``seed``."""
    rng = random.Random(seed)
    n_people = max(10, int(events * 0.45))
    n_companies = max(4, int(events * 0.15))
    people = [person(rng) for _ in range(n_people)]
    companies = [company(rng, rng.choice(people)) for _ in range(n_companies)]
    sample = Sample()
    sample.rows["public_security.population_register"] = people
    sample.rows["market_regulation.legal_entity_register"] = companies
    sample.rows["tax.tax_registration"] = [_tax(rng, c, sample) for c in companies]
    insured = rng.sample(people, int(n_people * 0.5))
    sample.rows["hrss.social_insurance_enrolment"] = [
        _insurance(rng, p, companies, sample) for p in insured]
    married = rng.sample(people, int(n_people * 0.12))
    sample.rows["civil_affairs.marriage_register"] = [
        {"resident_id": p["resident_id"], "name": p["name"],
         "marital_status": rng.choice(["MARRIED"] * 6 + ["DIVORCED", "WIDOWED"]),
         "spouse_id": rng.choice(people)["resident_id"], "registered_on": "2015-06-01",
         "registry_office": "360502"} for p in married]
    adopted = rng.sample(people, max(1, int(n_people * 0.02)))
    sample.rows["civil_affairs.adoption_register"] = [
        {"resident_id": p["resident_id"], "name": p["name"],
         "adopter_id": rng.choice(people)["resident_id"], "registered_on": "2010-03-15"}
        for p in adopted]
    return sample


def _tax(rng: random.Random, c: dict[str, Any], sample: Sample) -> dict[str, Any]:
    rep, addr = c["legal_representative"], c["registered_address"]
    roll = rng.random()
    if roll < 0.04:  # the tax bureau still has the previous legal representative
        rep = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
        sample.conflicts.append(f"company.legal_representative of {c['uscc']}")
    elif roll < 0.10:  # same address, other formatting: no conflict after normalisation
        addr = addr.replace("江西省", "江西省 ").replace("号", " 号")
    return {"uscc": c["uscc"], "taxpayer_name": c["name"], "legal_representative": rep,
            "registered_address": addr, "taxpayer_type": rng.choice(["GENERAL", "SMALL_SCALE"]),
            "tax_authority": rng.choice(TAX_OFFICES),
            "credit_rating": rng.choice(["A", "B", "M", None])}


def _insurance(rng: random.Random, p: dict[str, Any], companies: list[dict[str, Any]],
               sample: Sample) -> dict[str, Any]:
    addr = p["residence_address"]
    if rng.random() < 0.05:  # moved; social insurance not told
        addr = address(rng)
        sample.conflicts.append(f"person.residence_address of {p['resident_id']}")
    return {"resident_id": p["resident_id"], "name": p["name"], "residence_address": addr,
            "employer_uscc": rng.choice(companies)["uscc"] if rng.random() < 0.7 else None,
            "schemes": rng.sample(["pension", "medical", "unemployment", "injury", "maternity"],
                                  rng.randrange(1, 6)),
            "enrolled_since": "2012-01-01", "contribution_base": rng.randrange(3000, 20000)}
