"""The provider's Airflow plugin: the Images tab (a gallery app on the api-server)."""
