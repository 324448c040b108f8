from govbus.api.serve import serve

serve()
