"""The words synthetic events are made of: event types and their weights, names, URLs, agents.

Unicode on purpose (CJK, Arabic and Hebrew, emoji), and values that trip up loaders: empty
strings, quotes, commas, percent-escapes.
"""

from __future__ import annotations

WEB_TYPES: tuple[tuple[str, int], ...] = (
    ("click", 28),
    ("navigate", 8),
    ("load", 7),
    ("change", 6),
    ("custom", 12),
    ("custom_error", 2),
    ("seen", 10),
    ("uservar", 3),
    ("console_message", 4),
    ("abandon", 1),
    ("copy", 1),
    ("cumulative_layout_shift", 3),
    ("click_error", 1),
    ("request", 8),
)
MOBILE_TYPES: tuple[tuple[str, int], ...] = (
    ("click", 30),
    ("navigate", 12),
    ("custom", 10),
    ("change", 4),
    ("backgrounded", 3),
    ("crashed", 1),
    ("request", 6),
)

NAMES = (
    "User 90791",
    "Ada Lovelace",
    "王小明",
    "佐藤 花子",
    "김민지",
    "محمد علي",
    "שרה כהן",
    "Zoë Ångström",
    "Иван Петров",
    "🦊 Fox Fan",
    "José Núñez",
    'O\'Brien "Bo"',
)
DOMAINS = ("fruitshoppe.example.com", "shop.example.org", "例え.jp", "app.example.net")
PATHS = (
    "/",
    "/#/market",
    "/#/cart",
    "/#/checkout",
    "/products/123?ref=mail&utm=spring",
    "/search?q=caf%C3%A9",
    "/商品/りんご",
    "/account/settings",
)
PAGE_NAMES = ("Home", "Market", "Cart", "Checkout", "Product Detail", "Search", "Settings")
TEXTS = (
    "Add to cart",
    "Checkout",
    "",
    "Market",
    "購入する",
    "🛒 Add to cart",
    "إرسال",
    "Weiter →",
    'Say "hi"',
    "Line, with, commas",
)
SELECTORS = (
    "html .no-js body .ng-scope div .content div .market-place a .btn .btn-primary",
    "html body div#app header nav a.cart",
    "html body main form input[type=checkbox]",
    "html body div.modal button.close",
)
CUSTOM_EVENTS = ("Product Added", "Order Completed", "Checkout Error", "Signed Up", "検索")
ERROR_KINDS = ("TypeError", "ReferenceError", "console.error", "NetworkError")
REQ_URLS = (
    "https://api.example.com/v1/cart",
    "https://api.example.com/v1/orders?id=7",
    "https://cdn.example.com/img/🍎.png",
)
REQ_METHODS = ("GET", "POST", "PUT", "DELETE")
REQ_STATUS = (200, 200, 200, 201, 204, 304, 400, 404, 500, 503)
PLANS = ("free", "pro", "enterprise", "", "プロ")
TAGS = ("sale", "new", "🔥", "gift", "eco")
LATLONG = ("39.0481,-77.4728", "35.6895,139.6917", "-33.8688,151.2093", "52.5200,13.4050")
AGENTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # user agent, browser, version, device, platform, operating system
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
        "Safari",
        "17.1",
        "Desktop",
        "web",
        "OS X",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "Chrome",
        "120.0.0.0",
        "Desktop",
        "web",
        "Windows",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "17.1",
        "Mobile",
        "web",
        "iOS",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "Firefox",
        "121.0",
        "Desktop",
        "web",
        "Linux",
    ),
)
APPS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # app name, package, device model, vendor, platform, os version
    ("Fruit Shoppe", "com.example.fruitshoppe", "Pixel 8", "Google", "Android", "14"),
    ("Fruit Shoppe", "com.example.fruitshoppe", "iPhone15,2", "Apple", "iOS", "17.1"),
    ("果物屋", "jp.example.kudamono", "SM-S911B", "Samsung", "Android", "13"),
)
APP_VIEWS = ("MainActivity", "CartViewController", "CheckoutFragment", "設定")


def cum_weights(pairs: tuple[tuple[str, int], ...]) -> tuple[list[str], list[int]]:
    names = [name for name, _ in pairs]
    cumulative, total = [], 0
    for _, weight in pairs:
        total += weight
        cumulative.append(total)
    return names, cumulative


WEB_NAMES, WEB_CUM = cum_weights(WEB_TYPES)
MOBILE_NAMES, MOBILE_CUM = cum_weights(MOBILE_TYPES)
