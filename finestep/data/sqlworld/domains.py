"""The vocabulary of SQLWorld: domain templates, categorical value sets and the encoding styles of stored values.

A :class:`Domain` is 3 tables (two parents and a child with foreign keys to them). Each table and column has a
few naming variants; a generated database picks one per table and column, so schemas vary while staying
recognisable. A categorical column draws from a :class:`Category`: each value has a *surface* form (how a
question says it: ``"California"``, ``"gold"``) and a *code* (``"CA"``, ``"GLD"``). How a database stores
them is its :data:`STYLES` entry:

- ``plain``: the surface form as the question writes it (``"California"``, ``"gold"``): a probe is wasted;
- ``lower``: lower case (``"california"``, ``"gold"``): a probe is needed for proper nouns only;
- ``upper``: upper case (``"CALIFORNIA"``, ``"GOLD"``): a probe is needed;
- ``code``: the code (``"CA"``, ``"GLD"``): a probe is needed.

Nothing here is random; :mod:`finestep.data.sqlworld.generate` draws from it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATEGORIES", "DOMAINS", "STYLES", "Category", "ColumnSpec", "Domain", "TableSpec", "encode"]

STYLES = ("plain", "lower", "upper", "code")


def encode(surface: str, code: str, style: str) -> str:
    """How a value is stored under ``style`` (one of :data:`STYLES`)."""
    if style == "plain":
        return surface
    if style == "lower":
        return surface.lower()
    if style == "upper":
        return surface.upper()
    if style == "code":
        return code
    raise ValueError(f"unknown encoding style {style!r}; expected one of {STYLES}")


@dataclass(frozen=True)
class Category:
    """A set of categorical values as ``(surface form, code)`` pairs; codes never equal the surface form."""

    key: str
    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a table template.

    Attributes:
        key: the column's logical name, unique in its table.
        names: naming variants (SQL identifiers); a database uses one.
        kind: ``id`` (primary key), ``fk`` (``ref`` is the parent table's key; the name is
            ``<parent singular>_id``), ``int`` / ``real`` (uniform in ``[lo, hi]``), ``name`` (``ref`` is a
            name generator of :mod:`generate`), ``cat`` (``ref`` is a :data:`CATEGORIES` key); the hard tier
            (:mod:`finestep.data.sqlworld.hard`) adds ``date`` (text in a database's format) and ``cents``
            (money as integer cents).
        lo, hi: numeric range.
        step: thresholds in questions are multiples of it.
        pred: ``cat`` only: how a question restricts to a value: ``{v}`` the surface value, ``{col}`` the column.
        optional: the column is left out of some databases.
    """

    key: str
    names: tuple[str, ...]
    kind: str
    ref: str = ""
    lo: float = 0.0
    hi: float = 0.0
    step: float = 1.0
    pred: str = "with {col} {v}"
    optional: bool = False

    @property
    def sql_type(self) -> str:
        """The declared SQLite type."""
        return (
            "REAL" if self.kind == "real" else "TEXT" if self.kind in ("name", "cat", "date") else "INTEGER"
        )


@dataclass(frozen=True)
class TableSpec:
    """One table template: naming variants ``(table name, singular, plural)``, columns and a row-count range."""

    key: str
    names: tuple[tuple[str, str, str], ...]
    columns: tuple[ColumnSpec, ...]
    rows: tuple[int, int]


@dataclass(frozen=True)
class Domain:
    """A domain: its tables, parents before children."""

    name: str
    tables: tuple[TableSpec, ...]


def _cat(key: str, pairs: str) -> Category:
    values = tuple(tuple(p.split("=")) for p in pairs.split(";"))
    return Category(key, values)  # type: ignore[arg-type]


CATEGORIES: dict[str, Category] = {
    c.key: c
    for c in (
        _cat("us_state", "California=CA;New York=NY;Texas=TX;Florida=FL;Ohio=OH;Oregon=OR;Nevada=NV"),
        _cat("tier", "gold=GLD;silver=SLV;bronze=BRZ;platinum=PLT"),
        _cat("product_type", "electronics=ELEC;books=BOOK;toys=TOY;garden=GRDN;kitchen=KTCH;sports=SPRT"),
        _cat("order_status", "cancelled=CNL;shipped=SHP;pending=PND;delivered=DLV;returned=RTN"),
        _cat("major", "Biology=BIO;History=HIST;Physics=PHYS;Economics=ECON;Mathematics=MATH;Chemistry=CHEM"),
        _cat("department", "Science=SCI;Arts=ART;Engineering=ENGR;Business=BUS;Law=LAW"),
        _cat("semester", "fall=FA;spring=SP;summer=SU;winter=WI"),
        _cat(
            "specialty",
            "Cardiology=CARD;Neurology=NEUR;Pediatrics=PED;Oncology=ONC;Dermatology=DERM;Radiology=RAD",
        ),
        _cat("us_city", "Boston=BOS;Chicago=CHI;Denver=DEN;Seattle=SEA;Austin=AUS;Miami=MIA"),
        _cat("visit_status", "completed=CMP;cancelled=CNL;missed=MSD;scheduled=SCH"),
        _cat("country", "France=FR;Germany=DE;Japan=JP;Brazil=BR;Canada=CA;Italy=IT;Spain=ES"),
        _cat("genre", "mystery=MYS;fantasy=FAN;romance=ROM;history=HIS;poetry=POE;horror=HOR"),
        _cat("loan_status", "returned=RET;overdue=OVD;lost=LST;active=ACT"),
        _cat("shift", "morning=AM;afternoon=PM;night=NT;weekend=WE"),
        _cat("fuel", "diesel=DSL;electric=EV;hybrid=HYB;petrol=PTR"),
        _cat("zone", "north=N;south=S;east=E;west=W;central=C"),
        _cat("eu_city", "Madrid=MAD;London=LON;Paris=PAR;Berlin=BER;Rome=ROM;Lisbon=LIS"),
        _cat("position", "goalkeeper=GK;defender=DF;midfielder=MF;forward=FW"),
        _cat("weather", "sunny=SUN;rainy=RN;snowy=SNW;windy=WND;cloudy=CLD"),
    )
}

_ID = ColumnSpec("id", ("id",), "id")


def _fk(parent: str) -> ColumnSpec:
    return ColumnSpec(f"{parent}_id", (), "fk", ref=parent)


def _num(
    key: str, names: str, kind: str, lo: float, hi: float, step: float, optional: bool = False
) -> ColumnSpec:
    return ColumnSpec(key, tuple(names.split()), kind, lo=lo, hi=hi, step=step, optional=optional)


def _cat_col(key: str, names: str, category: str, pred: str = "with {col} {v}") -> ColumnSpec:
    return ColumnSpec(key, tuple(names.split()), "cat", ref=category, pred=pred)


def _name(names: str, generator: str) -> ColumnSpec:
    return ColumnSpec("name", tuple(names.split()), "name", ref=generator)


def _names(*triples: str) -> tuple[tuple[str, str, str], ...]:
    return tuple(tuple(t.split()) for t in triples)  # type: ignore[misc]


DOMAINS: tuple[Domain, ...] = (
    Domain("shop", (
        TableSpec("customer", _names("customers customer customers", "clients client clients",
                                     "buyers buyer buyers"), (
            _ID, _name("name full_name", "person"),
            _cat_col("state", "state region", "us_state", "in {v}"),
            _cat_col("tier", "tier level", "tier"),
            _num("age", "age", "int", 18, 80, 5, optional=True),
        ), (25, 45)),
        TableSpec("product", _names("products product products", "items item items"), (
            _ID, _name("name title", "product"),
            _cat_col("category", "category kind", "product_type"),
            _num("price", "price unit_price", "real", 2, 500, 25),
            _num("stock", "stock inventory", "int", 0, 300, 10, optional=True),
        ), (15, 30)),
        TableSpec("order", _names("orders order orders", "purchases purchase purchases"), (
            _ID, _fk("customer"), _fk("product"),
            _num("amount", "amount total", "real", 5, 1000, 50),
            _num("quantity", "quantity units", "int", 1, 20, 2, optional=True),
            _cat_col("status", "status order_status", "order_status"),
        ), (80, 160)),
    )),
    Domain("school", (
        TableSpec("student", _names("students student students", "pupils pupil pupils",
                                    "learners learner learners"), (
            _ID, _name("name full_name", "person"),
            _cat_col("major", "major field", "major", "majoring in {v}"),
            _num("gpa", "gpa grade_average", "real", 1, 4, 0.5),
            _num("year", "year study_year", "int", 1, 5, 1, optional=True),
        ), (25, 45)),
        TableSpec("course", _names("courses course courses", "classes class classes"), (
            _ID, _name("title name", "course"),
            _cat_col("department", "department dept", "department", "in the {v} department"),
            _num("credits", "credits credit_hours", "int", 1, 6, 1),
            _num("capacity", "capacity seats", "int", 10, 120, 10, optional=True),
        ), (12, 25)),
        TableSpec("enrollment", _names("enrollments enrollment enrollments",
                                       "registrations registration registrations"), (
            _ID, _fk("student"), _fk("course"),
            _num("grade", "grade score", "real", 40, 100, 5),
            _cat_col("semester", "semester term", "semester", "in the {v} {col}"),
        ), (80, 160)),
    )),
    Domain("clinic", (
        TableSpec("doctor", _names("doctors doctor doctors", "physicians physician physicians"), (
            _ID, _name("name full_name", "person"),
            _cat_col("specialty", "specialty field", "specialty", "specializing in {v}"),
            _num("experience", "experience_years years_experience", "int", 1, 40, 5),
            _num("salary", "salary pay", "int", 60000, 250000, 10000, optional=True),
        ), (12, 25)),
        TableSpec("patient", _names("patients patient patients", "clients client clients"), (
            _ID, _name("name full_name", "person"),
            _cat_col("city", "city hometown", "us_city", "from {v}"),
            _num("age", "age", "int", 1, 95, 5),
            _num("weight", "weight body_weight", "real", 3, 130, 10, optional=True),
        ), (25, 50)),
        TableSpec("visit", _names("visits visit visits", "appointments appointment appointments"), (
            _ID, _fk("patient"), _fk("doctor"),
            _num("cost", "cost fee", "real", 20, 900, 50),
            _num("duration", "duration length_minutes", "int", 10, 120, 10, optional=True),
            _cat_col("status", "status outcome", "visit_status"),
        ), (80, 160)),
    )),
    Domain("library", (
        TableSpec("author", _names("authors author authors", "writers writer writers"), (
            _ID, _name("name full_name", "person"),
            _cat_col("country", "country nationality", "country", "from {v}"),
            _num("birth_year", "birth_year year_of_birth", "int", 1920, 2000, 10),
        ), (15, 30)),
        TableSpec("book", _names("books book books", "titles title titles"), (
            _ID, _name("title name", "book"), _fk("author"),
            _cat_col("genre", "genre category", "genre", "in the {v} {col}"),
            _num("pages", "pages page_count", "int", 80, 900, 50),
            _num("price", "price list_price", "real", 5, 80, 5, optional=True),
        ), (30, 60)),
        TableSpec("loan", _names("loans loan loans", "checkouts checkout checkouts"), (
            _ID, _fk("book"),
            _num("days", "days loan_days", "int", 1, 60, 5),
            _num("late_fee", "late_fee fine", "real", 0, 25, 5, optional=True),
            _cat_col("status", "status loan_status", "loan_status"),
        ), (80, 160)),
    )),
    Domain("fleet", (
        TableSpec("driver", _names("drivers driver drivers", "operators operator operators"), (
            _ID, _name("name full_name", "person"),
            _cat_col("shift", "shift work_shift", "shift", "on the {v} shift"),
            _num("age", "age", "int", 21, 65, 5),
            _num("rating", "rating score", "real", 1, 5, 0.5, optional=True),
        ), (15, 30)),
        TableSpec("vehicle", _names("vehicles vehicle vehicles", "trucks truck trucks"), (
            _ID, _name("plate license_plate", "plate"),
            _cat_col("fuel", "fuel fuel_type", "fuel"),
            _num("capacity", "capacity payload", "int", 500, 5000, 500),
            _num("year", "year model_year", "int", 2005, 2023, 2, optional=True),
        ), (12, 25)),
        TableSpec("trip", _names("trips trip trips", "deliveries delivery deliveries"), (
            _ID, _fk("driver"), _fk("vehicle"),
            _num("distance", "distance trip_length", "real", 5, 900, 50),
            _num("duration", "duration trip_minutes", "int", 10, 600, 30, optional=True),
            _cat_col("zone", "zone region", "zone", "in the {v} {col}"),
        ), (80, 160)),
    )),
    Domain("sports", (
        TableSpec("team", _names("teams team teams", "clubs club clubs"), (
            _ID, _name("name team_name", "team"),
            _cat_col("city", "city home_city", "eu_city", "from {v}"),
            _num("founded", "founded founded_year", "int", 1880, 2010, 10),
            _num("budget", "budget", "real", 5, 500, 25, optional=True),
        ), (10, 20)),
        TableSpec("player", _names("players player players", "athletes athlete athletes"), (
            _ID, _name("name full_name", "person"), _fk("team"),
            _cat_col("position", "position role", "position"),
            _num("age", "age", "int", 17, 40, 2),
            _num("goals", "goals goals_scored", "int", 0, 40, 5),
        ), (50, 100)),
        TableSpec("match", _names("matches match matches", "games game games"), (
            _ID, _fk("team"),
            _num("attendance", "attendance crowd", "int", 1000, 60000, 5000),
            _num("score", "score goals_for", "int", 0, 7, 1, optional=True),
            _cat_col("weather", "weather conditions", "weather", "with {v} weather"),
        ), (60, 120)),
    )),
)  # fmt: skip
