package registry

import (
	"strings"
)

// Challenge is one WWW-Authenticate challenge: Bearer with realm, service and scope for a
// token flow, or Basic.
type Challenge struct {
	// Scheme in lowercase: "bearer", "basic".
	Scheme string
	// Params are the auth-params, keys in lowercase.
	Params map[string]string
}

// ParseChallenge reads one WWW-Authenticate header value, as registries send it: a scheme
// and comma-separated key=value parameters, each value a token or a quoted string
// (RFC 7235). It returns false for what it cannot read.
func ParseChallenge(h string) (Challenge, bool) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	if scheme == "" || strings.ContainsAny(scheme, "=,\"") {
		return Challenge{}, false
	}
	c := Challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			return c, true
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return Challenge{}, false
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i, closed := 1, false
			for ; i < len(rest); i++ {
				switch ch := rest[i]; ch {
				case '\\':
					if i+1 < len(rest) {
						i++
						b.WriteByte(rest[i])
					}
				case '"':
					closed = true
				default:
					b.WriteByte(ch)
				}
				if closed {
					break
				}
			}
			if !closed {
				return Challenge{}, false
			}
			val, rest = b.String(), rest[i+1:]
		} else {
			end := strings.IndexAny(rest, ", \t")
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
		}
		if key == "" || strings.ContainsAny(key, " \t\"") {
			return Challenge{}, false
		}
		c.Params[key] = val
	}
}
