// Package controller wires Ferry's controllers into one manager: the `ferry controller`
// process. Each controller lives in its own package below this one and talks to the
// others only through API objects.
package controller
