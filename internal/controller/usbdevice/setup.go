package usbdevice

import (
	ctrl "sigs.k8s.io/controller-runtime"
)

// Setup registers both controllers.
func Setup(mgr ctrl.Manager) error {
	if err := (&NodeReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&DeviceReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr)
}
