"""The dashboard's words in English and Chinese, defined once."""

from __future__ import annotations

LANGUAGES = ("zh", "en")
TEXT: dict[str, tuple[str, str]] = {  # key: (en, zh)
    "title": ("Loopspot dashboard", "Loopspot 管理后台"),
    "login": ("Log in", "登录"),
    "logout": ("Log out", "退出"),
    "email": ("Email", "邮箱"),
    "password": ("Password", "密码"),
    "old_password": ("Current password", "当前密码"),
    "new_password": ("New password", "新密码"),
    "change_password": ("Change password", "修改密码"),
    "password_changed": ("Password changed.", "密码已修改。"),
    "fleet": ("Fleet", "设备"),
    "router_id": ("Router", "路由器"),
    "merchant": ("Merchant", "商户"),
    "site": ("Site", "门店"),
    "city": ("City", "城市"),
    "channel_agent": ("Channel agent", "渠道商"),
    "state": ("State", "状态"),
    "last_seen": ("Last seen", "最后在线"),
    "agent_version": ("Agent", "版本"),
    "clients": ("Clients", "在线终端"),
    "config_wanted": ("Config wanted", "目标配置"),
    "config_applied": ("Config applied", "已应用配置"),
    "spool_backlog": ("Spool backlog", "待上传"),
    "spool_dropped": ("Dropped", "已丢弃"),
    "filter": ("Filter", "筛选"),
    "next_page": ("Next page", "下一页"),
    "csv": ("Download CSV", "下载 CSV"),
    "retire": ("Retire this router", "停用此路由器"),
    "events": ("Recent events", "最近事件"),
    "configs": ("Configs", "配置"),
    "commands": ("Commands", "命令"),
    "counter": ("Counter", "收银台"),
    "users": ("Users", "用户"),
    "role": ("Role", "角色"),
    "add_user": ("Add a user", "添加用户"),
    "user_added": ("Added:", "已添加："),  # noqa: RUF001
    "operator": ("Operator", "运营方"),
    "merchant_owner": ("Merchant owner", "商户老板"),
    "merchant_staff": ("Staff", "店员"),
    "error": ("Error", "错误"),
    "forbidden": ("You may not see this page.", "您无权访问此页面。"),
    "not_found": ("No such page.", "页面不存在。"),
    "throttled": (
        "Too many wrong passwords. Wait 15 minutes.",
        "密码错误次数过多，请 15 分钟后再试。",  # noqa: RUF001
    ),
    "wrong_login": ("Wrong email or password.", "邮箱或密码错误。"),
    # -- visitors pages (cloud/web/visitors_pages.py) --
    # -- portal design (cloud/web/design_pages.py) --
    # -- management (cloud/web/manage_pages.py) --
    # -- coupons and the counter (cloud/web/coupon_pages.py) --
    # -- operations --
}


def translate(key: str, language: str) -> str:
    """`key` in `language` (Chinese unless English is asked); the key itself if unknown."""
    en, zh = TEXT.get(key, (key, key))
    return en if language == "en" else zh
