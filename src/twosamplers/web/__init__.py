"""What both HTTP front ends (the web page `ui/` and `twosamplers serve`, `server/`) share: the
Host/origin/credential guard (`http_guard.py`). Imports nothing itself."""
