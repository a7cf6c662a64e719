// Container registry that azd pushes the worker image to; the worker identity pulls with AcrPull.

@description('Location of the registry.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Registry name (5-50 alphanumerics, globally unique).')
param registryName string

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
@description('Registry tier.')
param skuName string = 'Basic'

@description('Principal id of the worker identity: gets AcrPull on the registry.')
param pullPrincipalId string

// AcrPull: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles (Containers).
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_163:Vulnerability scanning is a Defender for Cloud plan enabled per subscription, not a registry property.
  // checkov:skip=CKV_AZURE_166:Quarantine needs Premium and a scanner that releases images; not used.
  // checkov:skip=CKV_AZURE_139:azd pushes from the developer's machine, so the public endpoint stays on; admin user and anonymous pull are off.
  name: registryName
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, pullPrincipalId, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: pullPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output loginServer string = registry.properties.loginServer
output name string = registry.name
