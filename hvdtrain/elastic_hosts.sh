#!/bin/sh
# hvdtrain's host discovery script for horovodrun --elastic (horovodrun runs it every second).
#
# Prints 'host:slots' lines: those of the user's script ($HVDTRAIN_DISCOVERY_SCRIPT), else the fixed list
# $HVDTRAIN_ELASTIC_HOSTS ('host:slots,...'). When the only host is this machine (localhost or 127.0.0.1) with two
# or more slots, its slots are split between the names 'localhost' and '127.0.0.1': Horovod blacklists a host when
# one of its workers fails, and ends the job when every host is blacklisted, so with a single name the first lost
# worker would end the job. With two names the other workers go on, and the lost one comes back after the
# blacklist cooldown.
set -e
if [ -n "${HVDTRAIN_DISCOVERY_SCRIPT:-}" ]; then
  hosts=$("$HVDTRAIN_DISCOVERY_SCRIPT")
else
  hosts=$(printf '%s\n' "${HVDTRAIN_ELASTIC_HOSTS:?}" | tr ',' '\n')
fi
printf '%s\n' "$hosts" | awk -F: '
  NF > 0 && $1 != "" { n++; line[n] = $0; host[n] = $1; slots[n] = $2 }
  END {
    if (n == 1 && (host[1] == "localhost" || host[1] == "127.0.0.1") && slots[1] + 0 >= 2) {
      half = int((slots[1] + 1) / 2)
      print "localhost:" half
      print "127.0.0.1:" slots[1] - half
    } else {
      for (i = 1; i <= n; i++) print line[i]
    }
  }'
