package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/registry"
	"github.com/ferryvm/ferry/internal/up"
)

// registryCommand puts disks in the registry of `ferry up` (or any directory served by
// `ferry registry serve`), for dataSource.type ContainerImage.
func registryCommand(stateDir *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "The local registry of disk images for dataSource.type ContainerImage (push, serve)",
		Long: `ferry up serves a read-only OCI registry on loopback (its address is in
<state-dir>/registry/address) from the directory <state-dir>/registry. Put a disk in it with

  ferry registry push DISK-FILE NAME[:TAG]

which writes DISK-FILE (qcow2, raw or ISO) as a containerDisk image: one layer holding
/disk/<file name>, as an image built FROM scratch with COPY <file> /disk/ is. Then

  dataSource:
    type: ContainerImage
    containerImage:
      image: <address>/NAME:TAG

imports it. The controller reaches a registry on loopback over plain HTTP; any other
registry over TLS.`,
	}
	var dir string
	push := &cobra.Command{
		Use:   "push DISK-FILE NAME[:TAG]",
		Short: "Write a disk file into the registry's directory as the image NAME:TAG (default tag latest)",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if dir == "" {
				dir = up.RegistryDir(*stateDir)
			}
			repo, tag, err := pushName(args[1])
			if err != nil {
				return err
			}
			desc, err := registry.Push(dir, args[0], repo, tag)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			fmt.Fprintf(out, "Pushed %s as %s:%s (%s) to %s\n", args[0], repo, tag, desc.Digest, dir)
			if !c.Flags().Changed("dir") {
				if addr, err := up.RegistryAddress(*stateDir); err == nil {
					fmt.Fprintf(out, "containerImage.image: %s/%s:%s\n", addr, repo, tag)
				} else {
					fmt.Fprintf(out, "Served once ferry up runs (%v)\n", err)
				}
			}
			return nil
		},
	}
	push.Flags().StringVar(&dir, "dir", "", "the registry's directory (default: <state-dir>/registry, which ferry up serves)")
	var serveDir, listen string
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve a registry directory read-only (ferry up runs one itself)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if serveDir == "" {
				serveDir = up.RegistryDir(*stateDir)
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			addr, done, err := registry.Serve(ctx, serveDir, listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Serving %s at %s\n", serveDir, addr)
			return <-done
		},
	}
	serve.Flags().StringVar(&serveDir, "dir", "", "the registry's directory (default: <state-dir>/registry)")
	serve.Flags().StringVar(&listen, "listen", "127.0.0.1:5000", "address to listen on (a registry off loopback must be reached over TLS: put it behind a TLS proxy)")
	cmd.AddCommand(push, serve)
	return cmd
}

// pushName reads NAME[:TAG] of a push; a registry host in front (the address of ferry
// up's registry, as in containerImage.image) is dropped.
func pushName(s string) (repo, tag string, err error) {
	if first, _, ok := strings.Cut(s, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		ref, err := registry.ParseReference(s)
		if err != nil {
			return "", "", err
		}
		if ref.Digest != "" {
			return "", "", fmt.Errorf("%q: push names a tag, not a digest", s)
		}
		return ref.Repository, ref.Tag, nil
	}
	repo, tag = s, "latest"
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		repo, tag = s[:i], s[i+1:]
	}
	if err := registry.CheckRepository(repo); err != nil {
		return "", "", err
	}
	return repo, tag, registry.CheckTag(tag)
}
