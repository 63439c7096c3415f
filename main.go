// Command terraform-provider-flotilla is the Terraform provider of Flotilla.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/flotilla-io/flotilla/provider"
)

// Format the examples and generate the docs under docs/ from the provider
// schema, templates/docs/ and examples/ (needs terraform on PATH). The doc
// templates have a directory of their own because tfplugindocs copies every
// other file it finds into docs/, and templates/cloud-init is not docs.
//go:generate terraform fmt -recursive ./examples/
//go:generate go run github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs@v0.25.0 generate --provider-name flotilla --website-source-dir templates/docs

// version is set by goreleaser (-X main.version).
var version = "dev"

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "set to true to run the provider with support for debuggers like delve")
	flag.Parse()

	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: "registry.terraform.io/flotilla-io/flotilla",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err.Error())
	}
}
