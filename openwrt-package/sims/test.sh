#!/bin/sh
# The feed's package test (run by the openwrt/packages CI on the target):
# $1 is the package name, $2 its version.
case "$1" in
sims)
	simsd --version | grep -F "$2"
	;;
esac
