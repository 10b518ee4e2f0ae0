"""The breaker records' admin page lives in `dashboards.admin`.

It shows the cache figures beside the records, and every figure is defined once, in
`dashboards.figures`; the cache core never imports the dashboards, so the page is
registered there.
"""
