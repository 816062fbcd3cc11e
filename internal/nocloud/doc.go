// Package nocloud builds the small read-only CD-ROM images a VM is provisioned from: the
// cloud-init NoCloud seed (volume label "cidata" with user-data, meta-data and
// network-config) and the Sysprep answer files of a Windows guest.
//
// The image is ISO 9660 with both Rock Ridge and Joliet, written by go-diskfs in pure Go:
//   - a CD-ROM is the natural medium: Linux reads a FAT filesystem from a device with
//     2048-byte sectors only when the FAT itself uses sectors that large, and Windows setup
//     looks for autounattend.xml on removable media;
//   - plain ISO 9660 names are 8.3 upper case ("USER_DAT.;1"), which cloud-init does not
//     find; Rock Ridge gives Linux the long lower-case names ("user-data"), and Joliet gives
//     them to Windows, which ignores Rock Ridge.
//
// The image is not byte-for-byte reproducible (its volume carries a creation time), so
// callers name seed files by Hash of the files' contents, which is.
//
// The package only builds and reads images; where they live and who uses them is the VM
// controller's business.
package nocloud
