@echo off
REM kubectl (1.26 and later) runs this on Windows to complete `kubectl itm <TAB>`.
kubectl itm __complete %*
