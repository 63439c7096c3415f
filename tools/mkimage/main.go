// Command mkimage builds the demo app into a one-layer OCI image and writes
// it as a docker-save tarball and/or pushes it to a plain-HTTP registry.
//
//	go run ./tools/mkimage -version v2 -tag flotilla.local/demo:v2 -o demo-v2.tar
//	go run ./tools/mkimage -version v1 -push 127.0.0.1:5000/demo:v1
//
// The logic lives in internal/imagebuild; this file only wires flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/flotilla-io/flotilla/internal/imagebuild"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run() error {
	version := flag.String("version", "v1", "version baked into the binary (main.version)")
	tag := flag.String("tag", "", "image name for the tarball (default flotilla.local/demo:<version>)")
	out := flag.String("o", "", "write a docker-save tarball to this file")
	push := flag.String("push", "", "push to this reference over plain HTTP, e.g. 127.0.0.1:5000/demo:v1")
	binary := flag.String("binary", "", "pack this prebuilt static binary instead of building the demo app")
	pkg := flag.String("package", imagebuild.DemoPackage, "Go package to build when -binary is not set")
	flag.Parse()
	if *out == "" && *push == "" {
		flag.Usage()
		return fmt.Errorf("nothing to do: give -o FILE and/or -push REF")
	}
	if *tag == "" {
		*tag = "flotilla.local/demo:" + *version
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	img, err := buildImage(ctx, *binary, *pkg, *version)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if *out != "" {
		if err := imagebuild.WriteTarball(*out, *tag, img); err != nil {
			return err
		}
		fmt.Printf("wrote %s (%s, %s)\n", *out, *tag, digest)
	}
	if *push != "" {
		if err := imagebuild.Push(ctx, *push, img); err != nil {
			return err
		}
		fmt.Printf("pushed %s (%s)\n", *push, digest)
	}
	return nil
}

func buildImage(ctx context.Context, binary, pkg, version string) (v1.Image, error) {
	if binary == "" {
		tmp, err := os.MkdirTemp("", "mkimage-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		binary = tmp + "/app"
		if err := imagebuild.BuildBinary(ctx, imagebuild.BuildOptions{Package: pkg, Version: version, Output: binary}); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	return imagebuild.Image(b, version)
}
