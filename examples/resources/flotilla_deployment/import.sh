# A deployment is imported by "namespace/name"; a bare "name" means
# namespace "default".
terraform import flotilla_deployment.web shop/web
