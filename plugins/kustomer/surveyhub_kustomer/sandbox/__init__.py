"""A local fake Kustomer org served over HTTP, for trying SurveyHub and for its tests."""
