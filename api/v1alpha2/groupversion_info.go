// Package v1alpha2 holds the virtualization.deckhouse.io/v1alpha2 API that Ferry
// serves: virtual machines, their operations, boot images, disks and address leases.
// The shapes follow the Deckhouse Virtualization Platform so that its documentation
// applies to Ferry word for word.
//
// +kubebuilder:object:generate=true
// +groupName=virtualization.deckhouse.io
package v1alpha2

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of this package.
	GroupVersion = schema.GroupVersion{Group: "virtualization.deckhouse.io", Version: "v1alpha2"}

	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
