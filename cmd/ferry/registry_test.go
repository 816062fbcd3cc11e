package main

import "testing"

func TestPushName(t *testing.T) {
	for in, want := range map[string][2]string{
		"disks/debian:12":                {"disks/debian", "12"},
		"debian":                         {"debian", "latest"},
		"127.0.0.1:8449/disks/debian:12": {"disks/debian", "12"},
		"localhost/d":                    {"d", "latest"},
	} {
		repo, tag, err := pushName(in)
		if err != nil || repo != want[0] || tag != want[1] {
			t.Errorf("pushName(%q) = %q, %q, %v; want %q", in, repo, tag, err, want)
		}
	}
	for _, bad := range []string{"Debian", "d@sha256:" + "00", "d:", "d:-x", "../d", "127.0.0.1:8449/"} {
		if repo, tag, err := pushName(bad); err == nil {
			t.Errorf("pushName(%q) = %q, %q", bad, repo, tag)
		}
	}
}
