# A service is imported by "namespace/name"; a bare "name" means namespace
# "default".
terraform import flotilla_service.web shop/web
