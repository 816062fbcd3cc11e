// Package logtime is how Ferry's processes write times in their JSON logs: RFC 3339 to
// the millisecond, so that one failover or migration can be followed step by step across
// the controller's, the agents' and the watchdogs' logs (whole seconds hide the order of
// steps a few hundred milliseconds apart).
package logtime

import "go.uber.org/zap/zapcore"

// Layout is RFC 3339 with milliseconds.
const Layout = "2006-01-02T15:04:05.000Z07:00"

// Encoder writes a log entry's time in Layout.
var Encoder = zapcore.TimeEncoderOfLayout(Layout)
