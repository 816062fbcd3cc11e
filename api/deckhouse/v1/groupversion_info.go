// Package v1 holds the part of the deckhouse.io/v1 API that Ferry reads: NodeGroup and its
// fencing settings.
//
// +kubebuilder:object:generate=true
// +groupName=deckhouse.io
package v1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of this package.
	GroupVersion = schema.GroupVersion{Group: "deckhouse.io", Version: "v1"}
	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
