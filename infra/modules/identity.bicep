// User-assigned managed identities: one the worker code authenticates with, one for the KEDA scaler.
// They are separate because the scaler must read the queue's message count, which Service Bus only
// allows with the Manage claim (Data Owner); the worker itself only ever needs to receive.

@description('Location of the identities.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Name of the identity the worker process uses (AZURE_CLIENT_ID).')
param workerIdentityName string

@description('Name of the identity the KEDA azure-servicebus scale rule uses.')
param scalerIdentityName string

resource worker 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: workerIdentityName
  location: location
  tags: tags
}

resource scaler 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: scalerIdentityName
  location: location
  tags: tags
}

output workerId string = worker.id
output workerClientId string = worker.properties.clientId
output workerPrincipalId string = worker.properties.principalId
output scalerId string = scaler.id
output scalerPrincipalId string = scaler.properties.principalId
