"""Tokencache settings: one module, driven by environment variables.

Every value has a laptop default so that `make run` works with no configuration;
production changes environment variables, never this file. The README has the table.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from cachecore import redis_clients

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TOKENCACHE_VAR_DIR", BASE_DIR / "var"))


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def envint(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def envfloat(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def envnetworks(name: str, default: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Addresses and networks, comma-separated; a typo stops start-up naming the variable."""
    try:
        return [ipaddress.ip_network(item, strict=False) for item in envlist(name, default)]
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}: {error} (use addresses or networks, e.g. 127.0.0.1,10.0.0.0/8)") from None


DEBUG = envbool("DEBUG", True)

# A development key is fine on a laptop; without DEBUG the key must come from the environment.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-tokencache-do-not-use-in-production"

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost" if not DEBUG else "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "channels",
    "cachecore",
    "agents",
    "dashboards",
    "axes",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "tokencache_project.urls"
ASGI_APPLICATION = "tokencache_project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # The header's "Dashboards" link, on every page for those who may open them.
                "dashboards.access.dashboards_nav",
            ],
        },
    },
]

# --- Database: SQLite under var/ unless DATABASE_URL says otherwise.
DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tokencache.sqlite3'}"),
        # Kept open by each long-lived thread (HTTP, turn pool): opening one per request cost 5-8% of
        # a short turn's CPU (py-spy). Checked before reuse, so a restarted database costs no error.
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 300),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server and the Celery worker read while the other writes;
    # the busy timeout turns short write contention into a wait instead of an error.
    # IMMEDIATE: a transaction takes the write lock at BEGIN, where the busy timeout applies.
    # A deferred one that reads first is refused at once ("database is locked") when it
    # tries to write after another connection did: the admin's saves, update_or_create.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: one server, one database index per use; or, by URL alone (cachecore/redis_clients.py,
# docs/deploy.md), a Redis Cluster (`redis+cluster://h1:7000,h2:7000`) or the primary that
# Sentinel names (`redis+sentinel://s1:26379,s2:26379/mymaster/0`). Under Sentinel the broker
# and the channel layer follow the same primary by default (databases 1 and 2); a cluster
# carries neither, so they need URLs of their own.
REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6391/0")
REDIS_MODE = redis_clients.mode_of(REDIS_URL)
_REDIS_TARGET = redis_clients.parse(REDIS_URL)


def _url_beside_redis(name: str, db: int) -> str:
    """CELERY_BROKER_URL or CHANNELS_REDIS_URL: set, or database `db` of REDIS_URL's Redis."""
    if os.environ.get(name):
        return envstr(name, "")
    if REDIS_MODE == "sentinel":
        sentinels = ",".join(f"{host}:{port}" for host, port in _REDIS_TARGET.hosts)
        return f"redis+sentinel://{sentinels}/{_REDIS_TARGET.master}/{db}"
    if REDIS_MODE == "cluster":
        raise ImproperlyConfigured(
            f"{name} must be set when REDIS_URL is a Redis Cluster: Celery's broker and channels-redis "
            "cannot use one (a single Redis, a redis+sentinel:// URL, or AMQP for the broker; docs/deploy.md)"
        )
    return f"redis://127.0.0.1:6391/{db}"


# Celery reads CELERY_BROKER_URL in kombu's form (`sentinel://…;sentinel://…`, see below).
_BROKER_URL = _url_beside_redis("CELERY_BROKER_URL", 1)
CHANNELS_REDIS_URL = _url_beside_redis("CHANNELS_REDIS_URL", 2)

TOKENCACHE_POOL_SIZE = envint("TOKENCACHE_POOL_SIZE", 10)
# Threads per web process that run HTTP requests (tokencache_project/http_bridge.py). No request
# waits for a model server in one (agents/interfaces/awaited.py), so they compute, and threads that
# compute at once only contend for the GIL: a few per process (docs/performance.md, "The server").
TOKENCACHE_HTTP_THREADS = envint("TOKENCACHE_HTTP_THREADS", 4)
# Threads per process for the synchronous parts of turns (agents/turn_loop.py).
TOKENCACHE_TURN_THREADS = envint("TOKENCACHE_TURN_THREADS", 32)
TOKENCACHE_CONNECT_TIMEOUT = envfloat("TOKENCACHE_CONNECT_TIMEOUT", 5.0)
TOKENCACHE_READ_TIMEOUT = envfloat("TOKENCACHE_READ_TIMEOUT", 5.0)
# The token cache's own reply timeout (the `tokens` alias): a lookup that waits longer than
# re-tokenizing its chunks would take (under 1 ms) is worse than no cache (docs/cachecore.md).
TOKENCACHE_CACHE_READ_TIMEOUT = envfloat("TOKENCACHE_CACHE_READ_TIMEOUT", 0.25)
TOKENCACHE_BREAKER_FAIL_MAX = envint("TOKENCACHE_BREAKER_FAIL_MAX", 5)
TOKENCACHE_BREAKER_RESET_SECONDS = envfloat("TOKENCACHE_BREAKER_RESET_SECONDS", 60.0)
# While the breaker is open, a PING this often (off the request path) lets its trial happen
# as soon as Redis answers; the reset above stays the upper bound (cachecore/probe.py).
TOKENCACHE_BREAKER_PROBE_SECONDS = envfloat("TOKENCACHE_BREAKER_PROBE_SECONDS", 2.0)
TOKENCACHE_MAX_VALUE_BYTES = envint("TOKENCACHE_MAX_VALUE_BYTES", 1024 * 1024)
# How long a single-flight claim on a missing text lasts; a claimant stalled longer than this lets
# another process tokenize the same text too (a waste, never a wrong value).
TOKENCACHE_LOCK_SECONDS = envfloat("TOKENCACHE_LOCK_SECONDS", 3.0)
TOKENCACHE_DEFAULT_TOKENIZER = envstr("TOKENCACHE_DEFAULT_TOKENIZER", "tiktoken:cl100k_base")
TOKENCACHE_MAX_MESSAGE_CHARS = envint("TOKENCACHE_MAX_MESSAGE_CHARS", 4000)
TOKENCACHE_MAX_BODY_BYTES = envint("TOKENCACHE_MAX_BODY_BYTES", 64 * 1024)
TOKENCACHE_CHAT_RATE_PER_MINUTE = envint("TOKENCACHE_CHAT_RATE_PER_MINUTE", 30)
# "web" or "worker": names this process in the per-process breaker records.
TOKENCACHE_PROCESS_ROLE = envstr("TOKENCACHE_PROCESS_ROLE", "web")
# Model servers (the `openai` backend): a generous read timeout, since it bounds the wait
# between streamed pieces, and a breaker of its own, separate from the token cache's.
TOKENCACHE_MODEL_CONNECT_TIMEOUT = envfloat("TOKENCACHE_MODEL_CONNECT_TIMEOUT", 5.0)
TOKENCACHE_MODEL_READ_TIMEOUT = envfloat("TOKENCACHE_MODEL_READ_TIMEOUT", 60.0)
# The read timeout alone lets a server that keeps trickling hold a turn forever.
TOKENCACHE_MODEL_TOTAL_TIMEOUT = envfloat("TOKENCACHE_MODEL_TOTAL_TIMEOUT", 120.0)
TOKENCACHE_MODEL_BREAKER_FAIL_MAX = envint("TOKENCACHE_MODEL_BREAKER_FAIL_MAX", 3)
TOKENCACHE_MODEL_BREAKER_RESET_SECONDS = envfloat("TOKENCACHE_MODEL_BREAKER_RESET_SECONDS", 30.0)
# vLLM's `cache_salt` on token-ID requests: a salt per agent (from SECRET_KEY and the slug), so two
# agents never share prefix-cache blocks. Off for a token-ID server that rejects unknown fields.
TOKENCACHE_MODEL_CACHE_SALT = envbool("TOKENCACHE_MODEL_CACHE_SALT", True)

_redis_options = {
    "CLIENT_CLASS": "django_redis.client.DefaultClient",
    # A bounded pool that waits for a free connection instead of failing at once.
    "CONNECTION_POOL_CLASS": "redis.BlockingConnectionPool",
    "CONNECTION_POOL_KWARGS": {
        "max_connections": TOKENCACHE_POOL_SIZE,
        "timeout": TOKENCACHE_CONNECT_TIMEOUT,
    },
    "SOCKET_CONNECT_TIMEOUT": TOKENCACHE_CONNECT_TIMEOUT,
    "SOCKET_TIMEOUT": TOKENCACHE_READ_TIMEOUT,
    # Errors must reach the token cache's circuit breaker, so nothing is swallowed here.
    "IGNORE_EXCEPTIONS": False,
}
# Where Django's cache and the token cache connect, by REDIS_MODE: django-redis's own client on
# one server; its SentinelClient (which asks the Sentinels for the primary on every new
# connection); redis-py's cluster client behind django-redis (cachecore/django_redis_cluster.py).
_redis_location: str | list[str] = REDIS_URL
if REDIS_MODE == "sentinel":
    _redis_location = f"redis://{_REDIS_TARGET.master}/{_REDIS_TARGET.db}"
    _redis_options = {
        **_redis_options,
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "CONNECTION_POOL_CLASS": "cachecore.redis_clients.SentinelBlockingConnectionPool",
        "SENTINELS": list(_REDIS_TARGET.hosts),
        "SENTINEL_KWARGS": {
            "socket_connect_timeout": TOKENCACHE_CONNECT_TIMEOUT,
            "socket_timeout": TOKENCACHE_READ_TIMEOUT,
        },
        **({"PASSWORD": _REDIS_TARGET.password} if _REDIS_TARGET.password else {}),
    }
elif REDIS_MODE == "cluster":
    _redis_location = [REDIS_URL]  # a list: django-redis would split the comma-separated nodes
    _redis_options = {**_redis_options, "CONNECTION_FACTORY": "cachecore.django_redis_cluster.ClusterConnectionFactory"}
_tokens_factory = {
    "single": {"CONNECTION_FACTORY": "cachecore.django_redis_pools.ConnectionFactoryByTimeouts"},
    "sentinel": {"CONNECTION_FACTORY": "cachecore.django_redis_pools.SentinelConnectionFactoryByTimeouts"},
}
CACHES = {
    # Django's own cache is an optimisation: while Redis is down it misses instead of raising.
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _redis_location,
        "KEY_PREFIX": "tc:django",
        "OPTIONS": {**_redis_options, "IGNORE_EXCEPTIONS": True},
    },
    # The token cache talks to this alias's raw client; its keys carry their own prefix.
    "tokens": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _redis_location,
        "OPTIONS": {
            **_redis_options,
            "SOCKET_TIMEOUT": TOKENCACHE_CACHE_READ_TIMEOUT,
            # django-redis shares one pool per URL between aliases: these key them by timeouts too.
            **_tokens_factory.get(REDIS_MODE, {}),
        },
    },
}

DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True

# Sessions live in the database: a Redis outage must not log everyone out.
SESSION_ENGINE = "django.contrib.sessions.backends.db"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # A cluster URL raises here, at start-up: channels-redis cannot use Redis Cluster.
        "CONFIG": {"hosts": [redis_clients.channels_host(CHANNELS_REDIS_URL)]},
    }
}

# --- Celery
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# kombu wants Sentinel as `sentinel://…;sentinel://…` plus the primary's name; a cluster URL
# raises here (Celery's broker cannot use Redis Cluster: docs/deploy.md).
CELERY_BROKER_URL, _broker_options = redis_clients.celery_broker(_BROKER_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": TOKENCACHE_CONNECT_TIMEOUT, **_broker_options}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # A question whose web worker died mid-turn gets an `interrupted` error answer (agents/interrupted.py).
    "mark-interrupted-turns": {"task": "agents.mark_interrupted_turns", "schedule": 300.0},
    # Every minute: the dashboards' per-minute rollups of the answer records (dashboards/rollup.py).
    "rollup-cache-stats": {"task": "dashboards.rollup_cache_stats", "schedule": 60.0},
    # Every minute: a cache that came back empty (restart, flush) is re-warmed, hottest chunks first.
    "check-cold-start": {"task": "agents.check_cold_start", "schedule": 60.0},
    # Every minute: a warming run left `running` by a worker that died is queued again.
    "requeue-orphaned-warming": {"task": "agents.requeue_orphaned_warming", "schedule": 60.0},
    # Hourly: each TTL policy's recommended TTL from its chunks' reuse (agents/tuner.py).
    "tune-ttl-policies": {"task": "agents.tune_ttl_policies", "schedule": 3600.0},
}
# Long tasks (warming) take one message at a time, so a slow run never holds others hostage.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Warming (agents/warming.py): chunks per lookup, share of time spent working (the rest is slept
# so chat keeps the CPU), and the most chunks one run writes (0: no limit).
TOKENCACHE_WARM_BATCH_CHUNKS = envint("TOKENCACHE_WARM_BATCH_CHUNKS", 64)
TOKENCACHE_WARM_DUTY_CYCLE = envfloat("TOKENCACHE_WARM_DUTY_CYCLE", 0.5)
TOKENCACHE_WARM_MAX_CHUNKS = envint("TOKENCACHE_WARM_MAX_CHUNKS", 20000)
CELERY_TIMEZONE = "UTC"

# --- Prometheus: with several processes, PROMETHEUS_MULTIPROC_DIR makes /metrics aggregate them.
PROMETHEUS_EXPORT_MIGRATIONS = False

# Who may read /metrics: the figures say which agents are used, how much and by which processes.
TOKENCACHE_METRICS_ALLOW = envnetworks("TOKENCACHE_METRICS_ALLOW", "127.0.0.1,::1")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"

# --- Login throttling (django-axes; tokencache_project/login_throttle.py): after
# TOKENCACHE_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair
# may not log in for TOKENCACHE_LOGIN_COOLOFF_MINUTES. `manage.py axes_reset` lifts every lockout.
AUTHENTICATION_BACKENDS = [
    "tokencache_project.login_throttle.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("TOKENCACHE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envfloat("TOKENCACHE_LOGIN_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "tokencache_project.login_throttle.locked_out"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [d for d in [BASE_DIR / "static"] if d.exists()]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# In development WhiteNoise serves straight from the apps' static folders: no collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security: strict unless DEBUG; TLS termination is assumed in front of the app.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# /healthz and /readyz are probed over plain HTTP by load balancers and supervisors.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# --- Logging: one JSON object per line on stdout, for any log collector.
LOG_LEVEL = envstr("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "tokencache_project.logging.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}},
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": LOG_LEVEL},
    },
}
