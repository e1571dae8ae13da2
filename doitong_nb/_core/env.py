"""The DOITONG_* environment variables, named once (the settings table says what each one sets)."""

from __future__ import annotations

# --- the environment: every variable the package reads ---------------------------------------------
ENV_API_KEY = "DOITONG_API_KEY"
ENV_BASE_URL = "DOITONG_BASE_URL"
ENV_TRANSPORT = "DOITONG_TRANSPORT"
ENV_OUTPUT_DIR = "DOITONG_OUTPUT_DIR"
ENV_LOCK_FILE = "DOITONG_LOCK_FILE"
ENV_TIMEOUT = "DOITONG_TIMEOUT"
ENV_MAX_CREDITS = "DOITONG_MAX_CREDITS"
ENV_PLAN = "DOITONG_PLAN"
ENV_STATUS_QUERY = "DOITONG_STATUS_QUERY"
ENV_WEBHOOK_SECRET = "DOITONG_WEBHOOK_SECRET"
ENV_LANG = "DOITONG_LANG"  # the language of messages; unset: the process locale (LANG=ko_KR.UTF-8), else English
ENV_SANDBOX_SPEED = "DOITONG_SANDBOX_SPEED"
ENV_SANDBOX_PLAN = "DOITONG_SANDBOX_PLAN"
ENV_SANDBOX_CREDITS = "DOITONG_SANDBOX_CREDITS"
ENV_SANDBOX_STATE = "DOITONG_SANDBOX_STATE"  # the folder the bundled sandbox keeps its jobs and balance in
