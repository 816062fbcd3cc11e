package controller

// Preflight and NeededResources are preflight and neededResources, for the package's tests.
var (
	Preflight       = preflight
	NeededResources = neededResources
)
