package main

import (
	"slices"
	"testing"
)

func TestTeardownDestroysOnlyKubeRoutersNewIPSets(t *testing.T) {
	before := []string{"KUBE-SRC-OLD", "f2b-sshd"}
	after := []string{"KUBE-SRC-OLD", "f2b-sshd", "KUBE-SRC-ABC", "KUBE-DST-DEF", "inet6:KUBE-DST-DEF",
		"kube-router-local-ips", "podman-set", "f2b-nginx", "TMP-XYZ", "KUBE-CLUSTER-IP"}
	got := ownIPSets(before, after)
	want := []string{"KUBE-SRC-ABC", "KUBE-DST-DEF", "inet6:KUBE-DST-DEF", "kube-router-local-ips"}
	if !slices.Equal(got, want) {
		t.Errorf("destroyed %v, want %v (the sets that existed before and others' new sets stay)", got, want)
	}
}
