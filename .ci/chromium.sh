#!/usr/bin/env bash
# Debian's chromium and chromium-driver for the browser tests (sourced by .ci/run; usable by hand).
#
#   source .ci/chromium.sh && chromium_install_when_missing
#
# The tests drive /usr/bin/chromium through /usr/bin/chromedriver with Selenium, giving the driver
# path explicitly, so nothing is downloaded at run time (Selenium Manager never runs).

chromium_install_when_missing() {
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
        return 0
    fi
    echo "browser: installing the Debian packages chromium and chromium-driver" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
    [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || {
        echo "browser: chromium or chromedriver still missing after apt-get install" >&2
        return 1
    }
}
