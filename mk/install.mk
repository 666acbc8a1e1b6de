# Install targets; included by the top-level Makefile (`include mk/install.mk`).
#
#   sudo make install                  # /opt/vitalwatch, /etc/vitalwatch, units, udev rules; enables the unit
#   make install DESTDIR=/tmp/root     # staged: systemctl/udevadm are never called
#   sudo make uninstall                # keeps /etc/vitalwatch and /var/lib/vitalwatch
#
# The logic lives in scripts/install.sh and scripts/uninstall.sh (usable without make);
# docs/operations.md describes the layout.

PREFIX ?= /opt/vitalwatch
DESTDIR ?=
# Extra flags for scripts/install.sh, e.g. INSTALL_FLAGS="--wheel dist/vitalwatch-0.1.0-py3-none-any.whl"
INSTALL_FLAGS ?=

.PHONY: install uninstall

install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" scripts/install.sh $(INSTALL_FLAGS)

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" scripts/uninstall.sh
