// Package version is Ferry's own version, set at link time.
package version

// Version is set with -ldflags -X by the Makefile.
var Version = "dev"
