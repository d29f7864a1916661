#!/bin/bash
# One cluster node of tests/pacemaker.rs, run as PID 1 of its own namespaces
# (`unshare --mount --uts --net --pid --fork --mount-proc --propagation private`):
# its own host name, private /run, /dev/shm (libqb's IPC), /var/lib/pacemaker,
# /var/lib/corosync, its own /etc/corosync, /etc/hosts and OCF agent tree, logs in DIR/log.
# Nothing it mounts is seen outside; everything it starts dies with it (PID 1 of the
# namespace). It waits for DIR/go (the test moves one end of a veth pair into its network
# namespace first), then starts corosync and pacemakerd and reaps orphans until killed.
#
# usage: node.sh NAME DIR OCF_DIR
set -eu
NAME=$1 DIR=$2 OCF_DIR=$3
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# Daemons the agent starts leave any kernel /dev/nbdN alone (both nodes share one kernel).
export URBD_KERNEL_NBD=0
export HOME=/root

hostname "$NAME"
for d in /run /dev/shm /var/lib/pacemaker /var/lib/corosync; do
	mount -t tmpfs -o mode=0755 tmpfs "$d"
done
chmod 1777 /dev/shm
mkdir -p /var/lib/pacemaker/cib /var/lib/pacemaker/pengine /var/lib/pacemaker/blackbox \
	/var/lib/pacemaker/cores /run/crm
chown -R hacluster:haclient /var/lib/pacemaker /run/crm
chmod 0750 /var/lib/pacemaker/*
mkdir -p "$DIR/log"
chown hacluster:haclient "$DIR/log"
chmod 0770 "$DIR/log"
mount --bind "$DIR/log" /var/log/pacemaker
mount --bind "$DIR/corosync" /etc/corosync
mount --bind "$DIR/hosts" /etc/hosts
# The OCF agent tree: the system's providers plus urbd's (OCF_DIR/urbd), only here.
for prov in /usr/lib/ocf/resource.d/*; do
	p=$(basename "$prov")
	[ "$p" = urbd ] && continue
	mkdir -p "$OCF_DIR/$p"
	mount --bind "$prov" "$OCF_DIR/$p"
done
mount --rbind "$OCF_DIR" /usr/lib/ocf/resource.d

echo ready >"$DIR/ready"
while [ ! -e "$DIR/go" ]; do sleep 0.1; done

corosync -f >"$DIR/log/corosync.out" 2>&1 &
for _ in $(seq 300); do
	corosync-cfgtool -s >/dev/null 2>&1 && break
	sleep 0.1
done
pacemakerd >"$DIR/log/pacemakerd.out" 2>&1 &

# PID 1: reap whatever is orphaned here (urbd daemons, nbdfuse) until the test kills us.
set +e
while :; do
	wait
	sleep 1
done
